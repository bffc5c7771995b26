//! Store URLs: `sqlite://PATH` or `postgres://user@host:port/db`.

use std::fmt;
use std::path::{Path, PathBuf};

use connhealth_core::Secret;

use crate::error::{Result, StoreError};

/// A parsed store URL. Its `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// An SQLite file.
    Sqlite {
        /// The file (relative paths are relative to the process's directory until
        /// [`StoreUrl::resolve_against`] is called).
        path: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// The URL without its password.
        url: url::Url,
        /// The password found in the URL, if any.
        password: Option<SecretEq>,
    },
}

/// A [`Secret`] that compares equal by value (for [`StoreUrl`]'s `PartialEq`).
#[derive(Clone, Debug)]
pub struct SecretEq(pub Secret);

impl PartialEq for SecretEq {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose() == other.0.expose()
    }
}

impl StoreUrl {
    /// Parse `sqlite://connhealth.db`, `sqlite:///abs/path.db`, `sqlite:file.db`,
    /// `postgres://user[:password]@host[:port]/db[?params]` (also `postgresql://`).
    pub fn parse(s: &str) -> Result<StoreUrl> {
        if let Some(rest) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(StoreError::BadUrl {
                    url: s.to_owned(),
                    reason: "no file named (e.g. sqlite://connhealth.db)".into(),
                });
            }
            return Ok(StoreUrl::Sqlite {
                path: PathBuf::from(rest),
            });
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let mut url = url::Url::parse(s).map_err(|e| StoreError::BadUrl {
                url: redact_str(s),
                reason: e.to_string(),
            })?;
            let password = url
                .password()
                .map(|p| {
                    percent_decode(p).map_err(|reason| StoreError::BadUrl {
                        url: redact_str(s),
                        reason,
                    })
                })
                .transpose()?
                .map(|p| SecretEq(Secret::new(p)));
            let _ = url.set_password(None);
            if url.path().trim_start_matches('/').is_empty() {
                return Err(StoreError::BadUrl {
                    url: url.to_string(),
                    reason: "no database named (e.g. postgres://user@host:5432/connhealth)".into(),
                });
            }
            return Ok(StoreUrl::Postgres { url, password });
        }
        Err(StoreError::BadUrl {
            url: redact_str(s),
            reason: "expected sqlite://PATH or postgres://user@host:port/db".into(),
        })
    }

    /// Parse, then resolve a relative SQLite path against `base` (the config file's folder).
    pub fn parse_relative_to(s: &str, base: &Path) -> Result<StoreUrl> {
        Ok(StoreUrl::parse(s)?.resolve_against(base))
    }

    /// A relative SQLite path taken from `base` (the config file's folder); anything else as is.
    pub fn resolve_against(self, base: &Path) -> StoreUrl {
        match self {
            StoreUrl::Sqlite { path } if path.is_relative() => StoreUrl::Sqlite {
                path: base.join(path),
            },
            other => other,
        }
    }

    /// The URL as it may be shown: no password.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
            StoreUrl::Postgres { url, .. } => url.to_string(),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        StoreUrl::parse(s)
    }
}

fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|e| e.to_string())?;
            let b = u8::from_str_radix(hex, 16)
                .map_err(|_| "a bad %-escape in the password".to_owned())?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the password is not UTF-8".to_owned())
}

/// Redact `user:password@` in any string that looks like a URL (for errors about URLs that did
/// not even parse).
pub(crate) fn redact_str(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let auth = &s[scheme + 3..at];
            match auth.find(':') {
                Some(colon) => format!("{}{}:***{}", &s[..scheme + 3], &auth[..colon], &s[at..]),
                None => s.to_owned(),
            }
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_forms() {
        assert_eq!(
            StoreUrl::parse("sqlite://connhealth.db").unwrap(),
            StoreUrl::Sqlite {
                path: "connhealth.db".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/x.db").unwrap(),
            StoreUrl::Sqlite {
                path: "/var/lib/x.db".into()
            }
        );
        let rel = StoreUrl::parse_relative_to("sqlite://data/c.db", Path::new("/etc/ch")).unwrap();
        assert_eq!(rel.redacted(), "sqlite:///etc/ch/data/c.db");
        let abs = StoreUrl::parse_relative_to("sqlite:///x.db", Path::new("/etc/ch")).unwrap();
        assert_eq!(abs.redacted(), "sqlite:///x.db");
        assert!(StoreUrl::parse("sqlite://").is_err());
        assert!(StoreUrl::parse("mysql://x/y").is_err());
    }

    #[test]
    fn postgres_password_is_redacted_everywhere() {
        let u = StoreUrl::parse("postgres://ch:s%40cret-pw@db.local:5433/connhealth").unwrap();
        for shown in [format!("{u}"), format!("{u:?}"), u.redacted()] {
            assert!(!shown.contains("cret-pw"), "{shown}");
            assert!(shown.contains("db.local:5433/connhealth"), "{shown}");
        }
        match &u {
            StoreUrl::Postgres { password, .. } => {
                assert_eq!(password.as_ref().unwrap().0.expose(), "s@cret-pw")
            }
            _ => unreachable!(),
        }
        // A URL that does not parse is still redacted in the error.
        let e = StoreUrl::parse("postgres://ch:hunter2@[bad/db").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"));
        let e = StoreUrl::parse("postgres://ch:hunter2@host:5432/").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
