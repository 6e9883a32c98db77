//! A tiny migration runner. sqlx's own migrator keeps one fixed
//! `_sqlx_migrations` table per database; artfs needs table prefixes so that
//! several stores share one database with independent migrations.

/// One migration: version and SQL with `{p}` standing for the table prefix.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "wal",
        sql: include_str!("../../migrations/sqlite/0002_wal.sql"),
    },
    Migration {
        version: 3,
        name: "checksum",
        sql: include_str!("../../migrations/sqlite/0003_checksum.sql"),
    },
    Migration {
        version: 4,
        name: "search",
        sql: include_str!("../../migrations/sqlite/0004_search.sql"),
    },
    Migration {
        version: 5,
        name: "config",
        sql: include_str!("../../migrations/sqlite/0005_config.sql"),
    },
    Migration {
        version: 6,
        name: "blocks",
        sql: include_str!("../../migrations/sqlite/0006_blocks.sql"),
    },
];

/// Split a migration into statements with the prefix substituted.
/// Comment lines go first, so a `;` in a comment splits nothing.
pub fn statements(m: &Migration, prefix: &str) -> Vec<String> {
    m.sql
        .replace("{p}", prefix)
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Table prefixes become part of identifiers: allow only a safe alphabet.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 40
        && prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_substituted_and_comments_dropped() {
        let stmts = statements(&SQLITE[0], "x1");
        assert!(stmts.iter().all(|s| !s.contains("{p}")));
        assert!(stmts.iter().any(|s| s.contains("CREATE TABLE x1_inodes")));
        assert!(stmts.iter().all(|s| !s.contains("--")));
        let m = Migration {
            version: 99,
            name: "t",
            sql: "-- a note; with a semicolon\nCREATE TABLE {p}_t (a);\nSELECT 1;\n",
        };
        assert_eq!(statements(&m, "x"), ["CREATE TABLE x_t (a)", "\nSELECT 1"]);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("artfs"));
        assert!(valid_prefix("storage_elem_01"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("1abc"));
        assert!(!valid_prefix("a; DROP TABLE x"));
    }
}
