//! Why a command failed, and the exit code that says so (sysexits.h where one fits).
//!
//! A report's own exit codes (0 healthy … 3 a provider failed, see [`crate::output`]) are not
//! errors: they come back as `Ok(code)`. Everything else is a [`CliError`], printed as one
//! line `connhealth: {message}` on stderr.

use std::fmt;

/// A failed command: what to print and which exit code to end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The command line is wrong (an unknown `--provider`, a refused `--token`): 64, EX_USAGE.
    Usage(String),
    /// The config file cannot be read at all: 66, EX_NOINPUT.
    NoInput(String),
    /// A remote or local service cannot be used (the listen address is taken): 69, EX_UNAVAILABLE.
    Unavailable(String),
    /// Something inside connhealth failed (the runtime, the simulators, the server): 70, EX_SOFTWARE.
    Internal(String),
    /// A state file cannot be read or written: 74, EX_IOERR.
    Io(String),
    /// The config file (or the environment it names) is wrong: 78, EX_CONFIG.
    Config(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 64,
            CliError::NoInput(_) => 66,
            CliError::Unavailable(_) => 69,
            CliError::Internal(_) => 70,
            CliError::Io(_) => 74,
            CliError::Config(_) => 78,
        }
    }

    /// The one-line message (without the `connhealth: ` prefix).
    pub fn message(&self) -> &str {
        match self {
            CliError::Usage(m)
            | CliError::NoInput(m)
            | CliError::Unavailable(m)
            | CliError::Internal(m)
            | CliError::Io(m)
            | CliError::Config(m) => m,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_sysexits_code() {
        let cases = [
            (CliError::Usage("u".into()), 64),
            (CliError::NoInput("n".into()), 66),
            (CliError::Unavailable("a".into()), 69),
            (CliError::Internal("i".into()), 70),
            (CliError::Io("o".into()), 74),
            (CliError::Config("c".into()), 78),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
            assert_eq!(e.to_string().len(), 1);
        }
    }
}
