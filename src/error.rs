//! The one formatter of error cause chains for logs: `outer: cause: root cause`.
//!
//! Errors here follow the house rule that a Display never repeats its source, so printing the
//! whole chain is how a log line carries every detail. Client-visible messages never use it
//! (they carry `api::ErrorCode` and a safe message instead).

use std::error::Error;
use std::fmt;

/// Displays an error and every `source()` below it, separated by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The chain of an `anyhow::Error` formatted the same way.
pub fn chain_of(error: &anyhow::Error) -> String {
    Chain(error.as_ref()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to open the journal")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn prints_every_cause_once() {
        let error = Outer(std::io::Error::other("disk full"));
        assert_eq!(
            Chain(&error).to_string(),
            "failed to open the journal: disk full"
        );
    }
}
