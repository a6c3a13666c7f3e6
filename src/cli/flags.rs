//! The library names a setting by its field in backticks (`batch_size`); the command line
//! shows it as the flag that sets it (`--batch-size`). Every field of the library's configs is
//! spelled as its flag with `_` for `-`, so the mapping is one rule, not a table.

/// `msg` with every backticked snake_case name written as its flag: "`lr` must be positive"
/// becomes "--lr must be positive". Other backticked text (a command to run) is left alone.
pub fn with_flags(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('`') else { break };
        let name = &after[..close];
        out.push_str(&rest[..open]);
        if is_field(name) {
            out.push_str("--");
            out.push_str(&name.replace('_', "-"));
        } else {
            out.push_str(&rest[open..open + close + 2]);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn is_field(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::with_flags;

    #[test]
    fn backticked_fields_become_flags_and_other_text_stays() {
        assert_eq!(
            with_flags("`batch_size` 0 must be at least 1; try `lr` or `warmup_iters`"),
            "--batch-size 0 must be at least 1; try --lr or --warmup-iters"
        );
        assert_eq!(
            with_flags("build it with `cargo build --features mpi`"),
            "build it with `cargo build --features mpi`"
        );
        assert_eq!(with_flags("no ticks"), "no ticks");
        assert_eq!(with_flags("one ` alone"), "one ` alone");
    }
}
