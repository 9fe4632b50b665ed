//! Output conventions shared by every command: `node: value` lines on stdout, errors on stderr
//! as `node: Error: text`, and the exit status that reflects whether anything failed.

use std::io::Write;

/// Collects the exit status while printing results. Output is buffered (a 10,000-node answer
/// is 200,000 lines) and flushed before errors are printed and when the printer is dropped, so
/// stdout and stderr keep their relative order.
pub struct Printer {
    failed: bool,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Default for Printer {
    fn default() -> Printer {
        Printer {
            failed: false,
            out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
        }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

impl Printer {
    /// The buffered stdout, for commands printing many lines without building each as a String.
    pub fn out(&mut self) -> &mut impl Write {
        &mut self.out
    }

    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    pub fn error(&mut self, subject: Option<&str>, text: &str) {
        self.failed = true;
        let _ = self.out.flush();
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
    crate::error::Chain(error).to_string()
}
