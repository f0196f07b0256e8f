//! Output folders that appear whole or not at all: a command writes into a hidden staging
//! sibling (`.<name>.tmp-<pid>`, marked by [`lesion_data::io::TMP_MARKER`] so nothing reads it
//! as data) and [`StagedDir::commit`] renames it into place once every file is written. A
//! failure (a bad image at 9 of 24) or a kill leaves no folder that looks usable, and an
//! existing non-empty output folder is refused, so old and new outputs are never mixed.
//! The same scheme as `lesion predict --bundle`'s output (`lesion_pipeline::bundle`).
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// A staging folder for the output folder `out`; removed on drop unless committed.
#[derive(Debug)]
pub struct StagedDir {
    out: PathBuf,
    staging: PathBuf,
    committed: bool,
}

/// The hidden sibling of `out` this process stages it in.
fn staging_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| TrainError::file(out, "output path has no folder name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent.join(format!(".{name}{}{}", lesion_data::io::TMP_MARKER, std::process::id())))
}

impl StagedDir {
    /// Refuses an `out` that exists and is not an empty folder; otherwise creates the staging
    /// folder (an empty `out` is replaced at commit).
    pub fn begin(out: &Path) -> Result<StagedDir> {
        if let Ok(meta) = std::fs::metadata(out) {
            if !meta.is_dir() {
                return Err(TrainError::file(
                    out,
                    "exists and is not a folder; give the path of a new output folder",
                ));
            }
            let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
            if !empty {
                return Err(TrainError::file(
                    out,
                    "exists and is not empty; give a new output folder (old and new outputs are never mixed)",
                ));
            }
        }
        let staging = staging_path(out)?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| TrainError::file(&staging, e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| TrainError::file(&staging, e))?;
        Ok(StagedDir { out: out.to_path_buf(), staging, committed: false })
    }

    /// Where to write the files now.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Moves the complete output into place (replacing an empty `out`).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.out.is_dir() {
            // Checked empty at `begin`; `remove_dir` fails rather than lose a file put there since.
            std::fs::remove_dir(&self.out).map_err(|e| {
                TrainError::file(&self.out, format!("cannot replace the empty output folder: {e}"))
            })?;
        }
        std::fs::rename(&self.staging, &self.out).map_err(|e| TrainError::file(&self.out, e))?;
        self.committed = true;
        Ok(self.out.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover is hidden and marked as never data.
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_appears_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("pred");
        let staged = StagedDir::begin(&out).unwrap();
        std::fs::write(staged.path().join("a.png"), b"x").unwrap();
        assert!(!out.exists(), "nothing in place before commit");
        drop(staged);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "abandoned staging removed");

        std::fs::create_dir(&out).unwrap();
        let staged = StagedDir::begin(&out).unwrap();
        std::fs::write(staged.path().join("a.png"), b"x").unwrap();
        staged.commit().unwrap();
        assert!(out.join("a.png").exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);

        let e = StagedDir::begin(&out).unwrap_err().to_string();
        assert!(e.contains("pred") && e.contains("not empty"), "{e}");
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(StagedDir::begin(&file).unwrap_err().to_string().contains("not a folder"));
    }
}
