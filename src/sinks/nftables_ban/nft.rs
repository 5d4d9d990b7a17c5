//! Applying a batch of commands to vigil's table (`nft -j -f -`, one transaction) and
//! listing it (`nft -j list table inet vigil`), through the shared runner
//! ([`crate::nft`]: nft's stderr kept, a hanging `nft` killed).
//!
//! The `nftables` crate builds and parses the JSON; its own helpers run `nft` too, but let
//! its standard error go to vigil's own and cannot be timed out.

use nftables::schema::Nftables;

pub use crate::nft::NftError;
use crate::nft::run;

use super::ruleset::{self, LiveTable};

/// Applies `batch` in one transaction (`nft -j -f -`).
pub async fn apply(program: &str, batch: &Nftables<'_>) -> Result<(), NftError> {
    let json = ruleset::to_json(batch);
    run(program, &["-j", "-f", "-"], Some(&json)).await?;
    Ok(())
}

/// Reads vigil's table; `None` when there is no such table.
pub async fn list(program: &str) -> Result<Option<LiveTable>, NftError> {
    let args = ["-j", "list", "table", "inet", ruleset::TABLE];
    let out = match run(program, &args, None).await {
        Ok(out) => out,
        Err(e) if e.is_missing() => return Ok(None),
        Err(e) => return Err(e),
    };
    let listing: Nftables = serde_json::from_str(&out).map_err(|e| NftError::Invalid {
        program: program.to_string(),
        what: args.join(" "),
        reason: e.to_string(),
    })?;
    Ok(Some(ruleset::parse_table(&listing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_nft_is_a_clear_error() {
        let err = list("/nonexistent/nft").await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot run `/nonexistent/nft`") && err.contains("nftables"),
            "{err}"
        );
    }

    /// nft's complaint is kept, on one line, with what to do about a missing capability.
    #[tokio::test]
    async fn a_refusal_keeps_what_nft_said() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nft");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule: Operation not permitted' >&2\necho '  ^^^^^' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = fake.to_string_lossy();
        let batch = ruleset::batch(ruleset::setup_commands(true));
        let err = apply(&program, &batch).await.unwrap_err().to_string();
        assert!(
            err.contains("failed: Error: Could not process rule: Operation not permitted (vigil needs CAP_NET_ADMIN"),
            "{err}"
        );
        assert!(!err.contains("^^^"), "{err}");
    }
}
