//! Host-side access to a simulated VM's disk that does not follow what the VM planted there.
//! The disk is writable by the (sandboxed) guest, and the simulator may run as root: a guest
//! that replaces `etc/passwd` or a marker's directory with a symlink to `/etc/shadow` must not
//! get the host file read or overwritten. Every path is checked component by component below
//! the disk root (no symlink, no `..`) just before it is used. A guest racing the check can
//! still swap a component in between; closing that needs `openat`/`O_NOFOLLOW`, which std
//! does not offer without `libc`.

use std::io::{Error, ErrorKind, Result};
use std::path::{Component, Path, PathBuf};

/// `disk/rel`, or `PermissionDenied` (logged) when `rel` leaves the disk or a component of it
/// that exists is a symlink. Missing components are fine: they are created or reported later.
pub(crate) fn below(disk: &Path, rel: impl AsRef<Path>) -> Result<PathBuf> {
    let rel = rel.as_ref();
    let mut path = disk.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => path.push(part),
            Component::CurDir | Component::RootDir => continue,
            Component::ParentDir | Component::Prefix(_) => return Err(refuse(disk, rel, "leaves the disk")),
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Err(refuse(disk, rel, "goes through a symlink")),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

fn refuse(disk: &Path, rel: &Path, why: &str) -> Error {
    tracing::warn!(disk = %disk.display(), path = %rel.display(), "{why}: host-side access refused");
    Error::new(
        ErrorKind::PermissionDenied,
        format!("{} {why} on disk {}", rel.display(), disk.display()),
    )
}

/// Create `rel`'s directory and write `contents` to it, refusing symlinks on the way.
pub(crate) fn write(disk: &Path, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
    let rel = rel.as_ref();
    if let Some(parent) = rel.parent() {
        std::fs::create_dir_all(below(disk, parent)?)?;
    }
    let path = below(disk, rel)?;
    std::fs::write(&path, contents)?;
    Ok(path)
}

/// Create the directory `rel` (and its parents), refusing symlinks on the way.
pub(crate) fn create_dir_all(disk: &Path, rel: impl AsRef<Path>) -> Result<PathBuf> {
    let path = below(disk, rel)?;
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// Read `rel` as text, refusing symlinks on the way.
pub(crate) fn read_to_string(disk: &Path, rel: impl AsRef<Path>) -> Result<String> {
    std::fs::read_to_string(below(disk, rel)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink the guest planted on its disk is not followed: the host file it names is
    /// neither overwritten nor read, whether the symlink is the file or a directory above it.
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (disk, host) = (tmp.path().join("disk"), tmp.path().join("host"));
        std::fs::create_dir_all(disk.join("etc")).expect("mkdir");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::write(host.join("shadow"), "secret").expect("write");
        std::os::unix::fs::symlink(host.join("shadow"), disk.join("etc/passwd")).expect("symlink");
        std::os::unix::fs::symlink(&host, disk.join("var")).expect("symlink");

        let e = write(&disk, "etc/passwd", "pwned").expect_err("file symlink followed");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(read_to_string(&disk, "etc/passwd").is_err());
        assert!(
            write(&disk, "var/shadow", "pwned").is_err(),
            "directory symlink followed"
        );
        assert!(create_dir_all(&disk, "var/x").is_err());
        assert!(write(&disk, "../host/shadow", "pwned").is_err(), "left the disk");
        assert_eq!(
            std::fs::read_to_string(host.join("shadow")).expect("read"),
            "secret"
        );
        assert!(!host.join("x").exists());

        write(&disk, "etc/hostname", "vm\n").expect("plain write");
        assert_eq!(read_to_string(&disk, "/etc/hostname").expect("read"), "vm\n");
    }
}
