//! Output conventions shared by every command: `node: value` lines on stdout, errors on stderr
//! as `node: Error: text`, and the exit status that reflects whether anything failed.

use std::io::Write;

/// Collects the exit status while printing results.
#[derive(Default)]
pub struct Printer {
    failed: bool,
}

impl Printer {
    pub fn line(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
    }

    pub fn error(&mut self, subject: Option<&str>, text: &str) {
        self.failed = true;
        match subject {
            Some(subject) => eprintln!("{subject}: Error: {text}"),
            None => eprintln!("Error: {text}"),
        }
    }

    pub fn status(&self) -> i32 {
        i32::from(self.failed)
    }
}

/// An error and its whole chain of causes on one line (`cannot connect to X: No such file`),
/// because the first layer alone rarely says what to fix.
pub fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
