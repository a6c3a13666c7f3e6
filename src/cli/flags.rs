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

/// Why a flag of torchvision's training script (`references/classification/train.py`) that
/// this tool does not take has no counterpart here, and what does its job.
pub fn torchvision_only(flag: &str) -> Option<&'static str> {
    let why = match flag.split('=').next().unwrap_or(flag) {
        "--use-v2" => "transforms v2 give v1's results, and here they are Pillow's, as v1 runs them",
        "--cache-dataset" => "listing an image folder is quick here (100,000 files in 0.11 s from a warm cache: ImageNet's in seconds), nothing to cache",
        "--start-epoch" => "--resume DIR continues after the run's last epoch, which its checkpoint records",
        "--device" => "the best GPU adapter is taken; --backend and --device-index choose another (`resnet info` lists them)",
        "--world-size" | "--dist-url" => "several processes start with `mpirun -np N resnet train ...` (built with `--features mpi`)",
        "--transformer-embedding-decay" => "it is for vision transformers; a ResNet has no embeddings",
        _ => return None,
    };
    Some(why)
}

fn is_field(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::{torchvision_only, with_flags};

    #[test]
    fn torchvisions_own_flags_say_what_does_their_job() {
        let hint = |f| torchvision_only(f).unwrap_or_default();
        assert!(hint("--start-epoch").contains("--resume"));
        assert!(hint("--world-size").contains("mpirun"));
        assert!(hint("--cache-dataset").contains("nothing to cache"));
        assert_eq!(torchvision_only("--bogus"), None);
        // flags torchvision and this tool share are not hints
        assert_eq!(torchvision_only("--interpolation"), None);
    }

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
