//! Running `nft` (nftables' command-line tool, Debian's `nftables`) with JSON in and out:
//! what the `nftables_ban` sink and the `port_counters` source share.
//!
//! nft's standard error is kept (it says why a batch was refused: `Operation not
//! permitted` without CAP_NET_ADMIN), and a hanging `nft` is killed after [`NFT_TIMEOUT`].

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// How long one `nft` run may take.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `nft` could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started (not installed, not on the PATH).
    #[error(
        "cannot run `{program}`: {source} (install nftables, e.g. Debian's `nftables` package, or set `nft` to its path)"
    )]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `nft` refused the commands or the listing.
    #[error("`{program} {what}` failed: {stderr}{hint}")]
    Failed {
        /// The program.
        program: String,
        /// What was asked (`-j -f -`, `-j list table inet vigil`).
        what: String,
        /// What nft said, on one line.
        stderr: String,
        /// What to do about it, when known.
        hint: &'static str,
    },
    /// `nft` did not finish in time (it was killed).
    #[error("`{program}` did not finish within {}s", NFT_TIMEOUT.as_secs())]
    Timeout {
        /// The program.
        program: String,
    },
    /// `nft` printed JSON that does not read as expected.
    #[error("`{program} {what}` printed JSON vigil cannot read: {reason}")]
    Invalid {
        /// The program.
        program: String,
        /// What was asked.
        what: String,
        /// Why.
        reason: String,
    },
}

impl NftError {
    /// Whether nft said the object asked for does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, NftError::Failed { stderr, .. } if stderr.contains("No such file or directory"))
    }
}

/// What to tell about nft's complaint.
fn hint(stderr: &str) -> &'static str {
    if stderr.contains("Operation not permitted") {
        " (vigil needs CAP_NET_ADMIN to change or read nftables: see the README, \"Privileges\")"
    } else {
        ""
    }
}

/// Runs `program args…` with `input` on its standard input: its standard output, or why
/// not.
pub async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
    let what = args.join(" ");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| NftError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let work = async {
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // A refused batch may close its input early; its stderr says why.
            let _ = stdin.write_all(text.as_bytes()).await;
            drop(stdin);
        }
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(NFT_TIMEOUT, work).await {
        Ok(Ok(o)) => o,
        Ok(Err(source)) => {
            return Err(NftError::Spawn {
                program: program.to_string(),
                source,
            });
        }
        Err(_) => {
            return Err(NftError::Timeout {
                program: program.to_string(),
            });
        }
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut said: String = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" / ");
    if said.is_empty() {
        said = format!("exit status {}", output.status);
    }
    let said: String = said.chars().take(600).collect();
    Err(NftError::Failed {
        program: program.to_string(),
        what,
        hint: hint(&said),
        stderr: said,
    })
}
