//! Who may call what (contract §3, `[access]`). The daemon checks every
//! caller itself, so that a missing or broken bus policy file does not open
//! the store.

use std::ffi::CString;

use crate::config::{Access, ConfigError};
use crate::types::LeafCertificateType;

/// A caller as the bus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its UID.
    pub uid: u32,
    /// Its primary and supplementary GIDs.
    pub gids: Vec<u32>,
}

impl Caller {
    /// Whether this caller could read a file with this owner and mode
    /// itself, so that the daemon never reads on behalf of a caller what
    /// the caller could not.
    pub fn may_read(&self, owner_uid: u32, owner_gid: u32, mode: u32) -> bool {
        self.permits(owner_uid, owner_gid, mode, 0o4)
    }

    /// Whether this caller could pass through a directory with this owner
    /// and mode.
    pub fn may_search(&self, owner_uid: u32, owner_gid: u32, mode: u32) -> bool {
        self.permits(owner_uid, owner_gid, mode, 0o1)
    }

    /// The kernel's rule for the mode bits: the owner's class when the
    /// caller owns the file, else the group's when it is in the group, else
    /// the others'. (ACLs are checked apart: see `store`.)
    fn permits(&self, owner_uid: u32, owner_gid: u32, mode: u32, bit: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let class = if owner_uid == self.uid {
            mode >> 6
        } else if self.gids.contains(&owner_gid) {
            mode >> 3
        } else {
            mode
        };
        class & bit != 0
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read-only methods (`Get*`, `Verify*`, `Is*`) and properties.
    Read,
    /// Every other method.
    Write,
}

impl Need {
    /// The right a method needs, from its name alone (contract §3):
    /// `Get*`, `Verify*` and `Is*` are read-only, so are the Properties
    /// methods `Get` and `GetAll`; everything else writes. A method added
    /// later cannot be given the wrong right by hand.
    pub fn of(member: &str) -> Need {
        if ["Get", "Verify", "Is"]
            .iter()
            .any(|p| member.starts_with(p))
        {
            Need::Read
        } else {
            Need::Write
        }
    }
}

/// The resolved roles: group names turned into GIDs once, at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// The daemon's own UID, which may always call.
    pub daemon_uid: u32,
    /// Members may call every method.
    pub write_gids: Vec<u32>,
    /// Members may call the read-only methods.
    pub read_gids: Vec<u32>,
    /// `[access] key_group`: the group key files are given to.
    pub key_gid: Option<u32>,
    /// `[access] v2g_key_groups`.
    pub v2g_key_gids: Vec<u32>,
    /// `[access] csms_key_groups`.
    pub csms_key_gids: Vec<u32>,
}

impl Roles {
    /// Resolves the configured group names. An unknown group is a config
    /// error that names the key and the group.
    pub fn resolve(access: &Access) -> Result<Roles, ConfigError> {
        let gids = |key: &'static str, names: &[String]| -> Result<Vec<u32>, ConfigError> {
            names
                .iter()
                .map(|name| {
                    group_id(name).ok_or_else(|| ConfigError::Value {
                        key,
                        message: format!("no group named `{name}`"),
                    })
                })
                .collect()
        };
        Ok(Roles {
            // SAFETY: getuid cannot fail.
            daemon_uid: unsafe { libc::getuid() },
            write_gids: gids("access.write_groups", &access.write_groups)?,
            read_gids: gids("access.read_groups", &access.read_groups)?,
            key_gid: gids("access.key_group", access.key_group.as_slice())?
                .first()
                .copied(),
            v2g_key_gids: gids("access.v2g_key_groups", &access.v2g_key_groups)?,
            csms_key_gids: gids("access.csms_key_groups", &access.csms_key_groups)?,
        })
    }

    /// Whether a caller may be handed the open key and chain of a `leaf`
    /// domain (`OpenLeafCredentials`): root, the daemon's user and the
    /// domain's key groups, nobody else, readers and writers included.
    pub fn may_open_credentials(&self, uid: u32, gids: &[u32], leaf: LeafCertificateType) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        gids.iter().any(|g| self.domain_key_gids(leaf).contains(g))
    }

    fn domain_key_gids(&self, leaf: LeafCertificateType) -> &[u32] {
        match leaf.stored_in() {
            Some(LeafCertificateType::V2G) => &self.v2g_key_gids,
            Some(LeafCertificateType::CSMS) => &self.csms_key_gids,
            _ => &[],
        }
    }

    /// Whether a caller may read the private key of a `leaf` domain, and so
    /// be told the password that opens it (contract §11.3): root, the
    /// daemon's user, the key group the files are given to, and the
    /// domain's key groups.
    pub fn may_read_keys(&self, uid: u32, gids: &[u32], leaf: LeafCertificateType) -> bool {
        self.may_open_credentials(uid, gids, leaf)
            || self.key_gid.is_some_and(|k| gids.contains(&k))
    }

    /// Whether a caller with this UID and these GIDs (primary and
    /// supplementary, as the bus reports them) may make a call that needs
    /// `need`. Root and the daemon's own user may always call.
    pub fn allows(&self, uid: u32, gids: &[u32], need: Need) -> bool {
        if uid == 0 || uid == self.daemon_uid {
            return true;
        }
        let member = |role: &[u32]| gids.iter().any(|g| role.contains(g));
        match need {
            Need::Write => member(&self.write_gids),
            Need::Read => member(&self.write_gids) || member(&self.read_gids),
        }
    }
}

/// The GID of a group name. The buffer grows on `ERANGE`, so that a group
/// with many members resolves too.
pub fn group_id(name: &str) -> Option<u32> {
    /// A group whose entry needs more than this is not a role group.
    const MAX_BUFFER: usize = 16 * 1024 * 1024;
    let c_name = CString::new(name).ok()?;
    let mut size = 16 * 1024;
    loop {
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let mut buf = vec![0u8; size];
        // SAFETY: every pointer is valid for the call; `buf` outlives
        // `group`'s borrowed strings, which are not kept.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < MAX_BUFFER {
            size *= 4;
            continue;
        }
        return (rc == 0 && !result.is_null()).then_some(group.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_decide_by_uid_and_groups() {
        let roles = Roles {
            daemon_uid: 900,
            write_gids: vec![50],
            read_gids: vec![60],
            key_gid: Some(70),
            v2g_key_gids: vec![80],
            csms_key_gids: vec![],
        };
        assert!(roles.allows(0, &[], Need::Write), "root");
        assert!(roles.allows(900, &[], Need::Write), "the daemon's user");
        assert!(
            roles.allows(1000, &[7, 50], Need::Write),
            "a writer by a supplementary group"
        );
        assert!(roles.allows(1000, &[50], Need::Read), "writers may read");
        assert!(roles.allows(1000, &[60], Need::Read));
        assert!(
            !roles.allows(1000, &[60], Need::Write),
            "readers may not write"
        );
        assert!(
            !roles.allows(1000, &[1000], Need::Read),
            "others get nothing"
        );
        let v2g = LeafCertificateType::V2G;
        let csms = LeafCertificateType::CSMS;
        assert!(roles.may_read_keys(0, &[], csms) && roles.may_read_keys(900, &[], csms));
        assert!(roles.may_read_keys(1000, &[60, 70], csms), "the key group");
        assert!(roles.may_read_keys(1000, &[80], v2g), "a V2G key group");
        assert!(
            !roles.may_read_keys(1000, &[80], csms),
            "not another domain's"
        );
        assert!(
            !roles.may_read_keys(1000, &[50, 60], v2g),
            "writers and readers are not key readers"
        );
        assert!(roles.may_open_credentials(1000, &[80], v2g));
        assert!(roles.may_open_credentials(0, &[], csms));
        assert!(
            !roles.may_open_credentials(1000, &[70], v2g),
            "key_group alone is not enough"
        );
        assert!(
            !roles.may_open_credentials(1000, &[50, 60], v2g),
            "nor are the roles"
        );
    }

    #[test]
    fn group_names_resolve_or_name_the_key() {
        let access = Access {
            write_groups: vec!["root".into()],
            read_groups: vec![],
            key_group: None,
            ..Access::default()
        };
        assert_eq!(Roles::resolve(&access).unwrap().write_gids, vec![0]);
        let access = Access {
            write_groups: vec![],
            read_groups: vec!["no-such-group-evsec".into()],
            key_group: None,
            ..Access::default()
        };
        assert_eq!(
            Roles::resolve(&access).unwrap_err().to_string(),
            "config key `access.read_groups`: no group named `no-such-group-evsec`"
        );
    }
}
