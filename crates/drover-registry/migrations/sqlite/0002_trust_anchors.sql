-- Subject DNs of each application's valid trust anchors: X.509 device authentication finds the
-- application by the client certificate's issuer DN.
CREATE TABLE trust_anchor_subjects (
    app TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (app, subject)
);
CREATE INDEX trust_anchor_subjects_subject ON trust_anchor_subjects(subject);
