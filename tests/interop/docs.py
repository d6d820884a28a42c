#!/usr/bin/env python3
"""Executable documentation: the examples of README.md and docs/*.md as a shell session.

Used by test_docs.sh (see the "Executable documentation" section of tests/interop/README.md for
the markers). Three commands:

  docs.py check FILE...                      every runnable block carries a marker
  docs.py session FILE OUTDIR PORTMAP        write OUTDIR/session.sh and the blocks it runs
  docs.py compare MODE ACTUAL EXPECTED PORTMAP   documented output vs. real output

PORTMAP is "8011=40123,8088=40124,..." (documented port = the port this run listens on).

Markers, each an HTML comment on the line (or lines) right before a fenced block:

  <!-- doc-test -->                 run the block; every command must exit 0
  <!-- doc-test: exit N -->         run the block; its last command must exit N
  <!-- doc-test: background NAME --> start the block in the background (output in $DOC_OUT/NAME;
                                    a ```console block: one command, whose documented output a
                                    later `doc_expect_background NAME` compares)
  <!-- doc-test: output -->         the block is the output of the block run before it
  <!-- doc-test: output json -->    the same, compared as JSON (see compare_json)
  <!-- not tested: REASON -->       a runnable block the harness cannot run here, and why
  <!-- doc-test-hidden              commands run at this point, not shown in the rendered page
  ...                               (setup the text assumes, or checks of background output)
  -->

Blocks in ```sh, ```bash, ```shell, ```console and ```python must carry one of the markers.
In a ```console block each `$ ` line is a command and the lines up to the next one its output.
"""

import json
import os
import re
import sys

RUNNABLE = {"sh", "bash", "shell", "console", "python"}
MARKER = re.compile(r"^<!--\s*(doc-test(?::\s*(.*?))?|not tested:\s*(.+?))\s*-->\s*$")
HIDDEN_START = re.compile(r"^<!--\s*doc-test-hidden\s*$")


class DocError(Exception):
    pass


def parse(path):
    """The steps of a markdown file: (kind, line, lang, text, directive)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    steps, pending, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        if HIDDEN_START.match(line):
            end = i + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            if end == len(lines):
                raise DocError(f"{path}:{i + 1}: doc-test-hidden without a closing -->")
            steps.append(("hidden", i + 1, "sh", "\n".join(lines[i + 1:end]), ""))
            i = end + 1
            continue
        m = MARKER.match(line.strip())
        if m:
            pending = (i + 1, m)
            i += 1
            continue
        if line.startswith("```"):
            lang = (line[3:].strip().split() or [""])[0]
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            body = "\n".join(lines[i + 1:end])
            marker = pending[1] if pending else None
            if marker is None:
                if lang in RUNNABLE:
                    steps.append(("unmarked", i + 1, lang, body, ""))
            elif marker.group(3):
                steps.append(("skip", i + 1, lang, body, marker.group(3)))
            else:
                steps.append(("block", i + 1, lang, body, (marker.group(2) or "").strip()))
            pending = None
            i = end + 1
            continue
        if line.strip():
            pending = None
        i += 1
    return steps


def check(paths):
    bad = []
    for p in paths:
        for kind, line, lang, _, _ in parse(p):
            if kind == "unmarked":
                bad.append(f"{p}:{line}: ```{lang} block without <!-- doc-test --> or <!-- not tested: why -->")
    for b in bad:
        print(b, file=sys.stderr)
    return 1 if bad else 0


def port_map(spec):
    return dict(kv.split("=") for kv in spec.split(",") if kv)


PORT_CONTEXT = r"(?:(?<=localhost:)|(?<=127\.0\.0\.1:)|(?<=0\.0\.0\.0:)|(?<=-p )|(?<=localhost\", ))"


def substitute(text, ports):
    """The documented default ports replaced by this run's ports (where a port is written:
    after `localhost:`, `127.0.0.1:`, `-p `, or Python's `"localhost", `)."""
    if not ports:
        return text
    pat = re.compile(PORT_CONTEXT + r"(" + "|".join(map(re.escape, ports)) + r")\b")
    return pat.sub(lambda m: ports[m.group(1)], text)


STATUS_COMMENT = re.compile(r"\s#\s*(\d{3})\b[^#'\"]*$")


def open_quote(text):
    """Whether the shell text ends inside a quoted string."""
    state, i = None, 0
    while i < len(text):
        c = text[i]
        if state is None:
            if c == "\\":
                i += 1
            elif c in "'\"":
                state = c
        elif state == "'":
            if c == "'":
                state = None
        elif c == "\\":
            i += 1
        elif c == '"':
            state = None
        i += 1
    return state is not None


def check_statuses(body):
    """A curl command whose line ends with a comment that starts with an HTTP status
    (`curl ... -d '{}'   # 201`, `# 202 Accepted`) runs through doc_status, which fails the block
    when the server answers another status. Continued lines (ending in `\\`) and JSON bodies
    spanning lines belong to the command they continue."""
    lines = body.split("\n")
    out, start = [], None
    for k, line in enumerate(lines):
        if start is None and re.match(r"\s*curl\s", line):
            start = len(out)
        out.append(line)
        if start is None:
            continue
        m = STATUS_COMMENT.search(line)
        if m:
            out[start] = re.sub(r"^(\s*)curl\s", rf"\1doc_status {m.group(1)} curl ", out[start], count=1)
            start = None
        elif not line.rstrip().endswith("\\") and not open_quote("\n".join(out[start:])):
            start = None
    return "\n".join(out)


def console_commands(body):
    """(command, expected output lines) of a ```console block."""
    out = []
    for line in body.split("\n"):
        if line.startswith("$ "):
            out.append([line[2:], []])
        elif out:
            out[-1][1].append(line)
        elif line.strip():
            raise DocError(f"console output before the first command: {line!r}")
    return out


def q(s):
    return "'" + s.replace("'", "'\\''") + "'"


def session(path, outdir, ports):
    """Write OUTDIR/session.sh: one doc-step call per block, in the document's order."""
    blocks = os.path.join(outdir, "blocks")
    os.makedirs(blocks, exist_ok=True)
    name = os.path.basename(path)
    script = ["#!/usr/bin/env bash", f"# generated by docs.py from {path}",
              'source "$INTEROP_DIR/docs_session.sh"']
    n = 0

    def write(ext, text):
        nonlocal n
        n += 1
        f = os.path.join(blocks, f"{n:03d}.{ext}")
        with open(f, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        return f

    last_run = False
    for kind, line, lang, body, directive in parse(path):
        loc = q(f"{name}:{line}")
        if kind == "unmarked":
            raise DocError(f"{path}:{line}: runnable block without a marker")
        if kind == "skip":
            continue
        if kind == "hidden":
            script.append(f"doc_run {loc} {q(write('sh', substitute(body, ports)))} 0")
            continue
        words = directive.split()
        verb = words[0] if words else ""
        if verb == "output":
            if not last_run:
                raise DocError(f"{path}:{line}: an output block with no block run before it")
            mode = words[1] if len(words) > 1 else "lines"
            script.append(f"doc_expect {loc} {mode} {q(write('expected', body))}")
            continue
        if lang not in RUNNABLE:
            raise DocError(f"{path}:{line}: doc-test on a ```{lang} block")
        rc = int(words[1]) if verb == "exit" else 0
        if verb == "background" and lang == "console":
            # One command, started in the background; a doc-test-hidden block compares its
            # output with the documented lines later: `doc_expect_background NAME`.
            cmds = console_commands(body)
            if len(words) != 2 or len(cmds) != 1:
                raise DocError(f"{path}:{line}: a background console block has one command and a NAME")
            f = write("sh", check_statuses(substitute(cmds[0][0], ports)))
            with open(os.path.join(blocks, words[1] + ".expected"), "w", encoding="utf-8") as fh:
                fh.write("\n".join(cmds[0][1]) + "\n")
            script.append(f"doc_background {loc} sh {q(f)} {q(words[1])}")
        elif verb == "background":
            if len(words) != 2:
                raise DocError(f"{path}:{line}: background needs a NAME")
            kind_ = "python" if lang == "python" else "sh"
            f = write("py" if lang == "python" else "sh", substitute(body, ports))
            script.append(f"doc_background {loc} {kind_} {q(f)} {q(words[1])}")
        elif lang == "python":
            script.append(f"doc_python {loc} {q(write('py', substitute(body, ports)))} {rc}")
        elif lang == "console":
            cmds = console_commands(body)
            for k, (cmd, expected) in enumerate(cmds):
                want = rc if k == len(cmds) - 1 else 0
                code = check_statuses(substitute(cmd, ports))
                script.append(f"doc_run {loc} {q(write('sh', code))} {want}")
                if any(e.strip() for e in expected):
                    script.append(f"doc_expect {loc} lines {q(write('expected', chr(10).join(expected)))}")
        elif verb in ("", "exit"):
            code = check_statuses(substitute(body, ports))
            script.append(f"doc_run {loc} {q(write('sh', code))} {rc}")
        else:
            raise DocError(f"{path}:{line}: unknown directive {directive!r}")
        last_run = True
    script.append("doc_done")
    with open(os.path.join(outdir, "session.sh"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(script) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------
# comparing output

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
TOKEN = re.compile(r"drg_[A-Za-z0-9]{6}_[A-Za-z0-9]{30,}|drg_[A-Za-z0-9_]*(?:\.\.\.|…)")
AGE = re.compile(r"(?<![\w.:-])\d+(?:s|m|h|d)(?![\w.:-])")
WILD = re.compile(r"\.\.\.|…")


def time_shape(t):
    """A timestamp's shape: digits as 0, and a fraction of 4 to 9 digits as 9 (a nanosecond
    time whose last digits happen to be 0 is printed with 6), 1 to 3 digits kept as they are."""
    t = re.sub(r"\d", "0", t)
    return re.sub(r"\.0{4,9}(?=\D|$)", ".000000000", t)


def normalise(text, ports, expected):
    """What may differ between runs made equal: this run's ports back to the documented ones,
    tokens, ages; timestamps keep their shape (a documented millisecond time does not match a
    nanosecond one, see time_shape) but not their digits."""
    if not expected:
        back = {v: k for k, v in ports.items()}
        text = substitute(text, back)
    text = TOKEN.sub("drg_<token>", text)
    text = TIMESTAMP.sub(lambda m: time_shape(m.group(0)), text)
    text = AGE.sub("<age>", text)
    lines = [re.sub(r"[ \t]+", " ", l).strip() for l in text.split("\n")]
    return [l for l in lines if l]


def line_regex(line):
    return "[^\n]*".join(re.escape(p) for p in WILD.split(line))


def match_lines(actual, expected):
    """Expected lines, in order, are the actual lines; `...` alone is any number of lines and
    `...`/`…` in a line any text."""
    pattern = "".join("(?:[^\n]*\n)*?" if WILD.fullmatch(e) else line_regex(e) + "\n"
                      for e in expected)
    return re.fullmatch(pattern, "\n".join(actual) + "\n", re.S) is not None


def json_matches(actual, expected):
    """Every key of an expected object is in the actual one with a matching value; a string
    with `…`/`...` is a pattern; the key "..." stands for more keys (always allowed)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return False
        return all(k == "..." or (k in actual and json_matches(actual[k], v))
                   for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            json_matches(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, str) and TIMESTAMP.fullmatch(expected):
        return isinstance(actual, str) and time_shape(actual) == time_shape(expected)
    if isinstance(expected, str) and WILD.search(expected):
        return isinstance(actual, str) and re.fullmatch(line_regex(expected), actual, re.S) is not None
    return actual == expected


def json_docs(text):
    """Every JSON value in the text (one after the other, or one per line among other lines)."""
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        j = text.find("{", i)
        k = text.find("[", i)
        starts = [x for x in (j, k) if x >= 0]
        if not starts:
            break
        i = min(starts)
        try:
            v, end = dec.raw_decode(text, i)
            out.append(v)
            i = end
        except json.JSONDecodeError:
            i += 1
    return out


def compare(mode, actual_path, expected_path, ports):
    actual = open(actual_path, encoding="utf-8", errors="replace").read()
    expected = open(expected_path, encoding="utf-8").read()
    if mode == "json":
        want = json.loads(expected)
        docs = json_docs(actual)
        if any(json_matches(d, want) for d in docs):
            return 0
        print("documented JSON:\n" + json.dumps(want, indent=1) + "\nnot found in the output:\n"
              + actual[-4000:], file=sys.stderr)
        return 1
    if mode != "lines":
        print(f"unknown output mode {mode}", file=sys.stderr)
        return 2
    a, e = normalise(actual, ports, False), normalise(expected, ports, True)
    if match_lines(a, e):
        return 0
    print("documented output (normalised):\n  " + "\n  ".join(e) +
          "\nreal output (normalised):\n  " + "\n  ".join(a[-60:]), file=sys.stderr)
    return 1


def main(argv):
    try:
        if argv[1] == "check":
            return check(argv[2:])
        if argv[1] == "session":
            return session(argv[2], argv[3], port_map(argv[4]))
        if argv[1] == "compare":
            return compare(argv[2], argv[3], argv[4], port_map(argv[5]))
    except DocError as e:
        print(e, file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
