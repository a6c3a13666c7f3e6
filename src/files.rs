//! Files written so that a crash never leaves half of one (native only).

/// Writes `bytes` to `path` atomically: `PATH.<pid>.tmp` in the same directory (two processes
/// writing one file never share a temporary), fsync, rename (the temporary file is removed on
/// failure). The error is one line naming the step that failed.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::result::Result<(), String> {
    use std::io::Write;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", tmp.display()));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot rename {} onto it: {e}", tmp.display()));
    }
    // Make the rename itself durable (directories cannot be opened for this on Windows).
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
