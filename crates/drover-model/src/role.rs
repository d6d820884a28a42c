//! Members of an application, their roles, and what each role permits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member's role in an application. The owner is not a member: ownership is separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the app and its devices.
    Reader,
    /// Read and write the app and its devices.
    Manager,
    /// Manager, plus manage members and delete the app.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberEntry {
    pub role: Role,
}

/// Members by user name; the key `""` stands for every authenticated user (a public app).
pub type Members = BTreeMap<String, MemberEntry>;

/// What a request wants to do with an application (or anything inside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
    /// Manage members, delete the application.
    Admin,
    /// Transfer ownership.
    Owner,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A system administrator: may do everything.
    SystemAdmin(String),
    User(String),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::SystemAdmin(n) | Principal::User(n) => n,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::SystemAdmin(_))
    }
}

/// Whether `who` may do `what` in an app owned by `owner` with `members`.
pub fn permits(who: &Principal, owner: Option<&str>, members: &Members, what: Permission) -> bool {
    let user = match who {
        Principal::SystemAdmin(_) => return true,
        Principal::User(u) => u.as_str(),
    };
    if owner == Some(user) {
        return true;
    }
    let role = [user, ""]
        .iter()
        .filter_map(|k| members.get(*k).map(|m| m.role))
        .max();
    match (role, what) {
        (None, _) | (Some(_), Permission::Owner) => false,
        (Some(_), Permission::Read) => true,
        (Some(r), Permission::Write) => r >= Role::Manager,
        (Some(r), Permission::Admin) => r >= Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        let mut m = Members::new();
        m.insert("r".into(), MemberEntry { role: Role::Reader });
        m.insert(
            "m".into(),
            MemberEntry {
                role: Role::Manager,
            },
        );
        m.insert("a".into(), MemberEntry { role: Role::Admin });
        let u = |n: &str| Principal::User(n.into());
        assert!(permits(&u("o"), Some("o"), &m, Permission::Owner));
        assert!(permits(&u("r"), Some("o"), &m, Permission::Read));
        assert!(!permits(&u("r"), Some("o"), &m, Permission::Write));
        assert!(permits(&u("m"), Some("o"), &m, Permission::Write));
        assert!(!permits(&u("m"), Some("o"), &m, Permission::Admin));
        assert!(permits(&u("a"), Some("o"), &m, Permission::Admin));
        assert!(!permits(&u("a"), Some("o"), &m, Permission::Owner));
        assert!(!permits(&u("x"), Some("o"), &m, Permission::Read));
        assert!(!permits(&u("x"), None, &m, Permission::Read));
        assert!(permits(
            &Principal::SystemAdmin("admin".into()),
            None,
            &m,
            Permission::Owner
        ));
        m.insert("".into(), MemberEntry { role: Role::Reader });
        assert!(permits(&u("x"), None, &m, Permission::Read));
        assert!(!permits(&u("x"), None, &m, Permission::Write));
    }
}
