//! Progress lines on stderr while a mode runs, drawn by `indicatif`: only
//! when stderr is a terminal (so pipes, logs and `--json` runs stay clean),
//! each one line redrawn in place and left showing its last state.
//!
//! What it does not do: measure. The modes count and time what they report
//! themselves; a progress line only shows their counts as they go.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A line that shows the message it is given.
pub(crate) const MESSAGE: &str = "  {msg}";

/// Connections opened so far, of how many.
pub(crate) const OPENED: &str = "  opened {pos} of {len}";

/// Publications sent so far, of how many.
pub(crate) const PUBLISHED: &str = "  published {pos} of {len}";

/// Worker processes ready so far, of how many, and what they did.
pub(crate) const WORKERS_READY: &str = "  {pos} of {len} workers ready, {msg}";

/// A progress line of `len` steps drawn from `template` (one of this
/// module's); hidden unless `shown` and stderr is a terminal.
pub(crate) fn line(shown: bool, len: u64, template: &'static str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    // Invariant: the templates are this module's constants, which the tests
    // parse.
    let style = ProgressStyle::with_template(template).expect("a valid progress template");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for template in [MESSAGE, OPENED, PUBLISHED, WORKERS_READY] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
        assert!(line(false, 1, OPENED).is_hidden());
    }
}
