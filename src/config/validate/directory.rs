//! `[directory]`: the shared directory database. The URL is parsed by the PostgreSQL driver's
//! own parser (no connection is made here), so `sipedge check` refuses a malformed one.

use crate::config::{raw, ConfigError, DirectorySettings};

impl super::Validator<'_> {
    pub(super) fn directory(
        &self,
        d: &raw::RawDirectory,
    ) -> Result<DirectorySettings, ConfigError> {
        let url = d.url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(self.err(
                "directory.url",
                "must be a postgres://user@host:port/database URL",
            ));
        }
        let parsed: tokio_postgres::Config = url.parse().map_err(|e| {
            self.err(
                "directory.url",
                &format!("{}: {e}", crate::config::redact_url(url)),
            )
        })?;
        if parsed.get_dbname().is_none() {
            return Err(self.err("directory.url", "names no database (…/database)"));
        }
        if parsed.get_user().is_none() {
            return Err(self.err("directory.url", "names no user (postgres://user@…)"));
        }
        Ok(DirectorySettings {
            url: url.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const LAB: &str = include_str!("../../../config/sipedge.toml");

    fn with(table: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(Path::new("t.toml"), &format!("{LAB}\n{table}"))
    }

    #[test]
    fn directory_url_is_checked() {
        assert!(with("").unwrap().directory.is_none());
        let c = with("[directory]\nurl = \"postgres://postgres@127.0.0.1:5432/sipedge\"").unwrap();
        assert_eq!(
            c.directory.unwrap().url,
            "postgres://postgres@127.0.0.1:5432/sipedge"
        );
        for bad in [
            "mysql://x@h/db",
            "postgres://postgres@127.0.0.1:99999/db",
            "postgres://postgres@127.0.0.1:5432",
        ] {
            let e = with(&format!("[directory]\nurl = {bad:?}")).unwrap_err();
            assert_eq!(e.key, "directory.url", "{bad}: {e}");
        }
        let e = with("[directory]\nurl = \"postgres://u:hunter2@h:70000/db\"").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(with("[directory]\nurl = \"postgres://u@h/db\"\nuser = \"x\"").is_err());
        assert_eq!(
            crate::config::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }
}
