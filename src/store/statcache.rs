//! CONTRACT STUB — helper B replaces this file.
//! The stat cache: (dev, inode, size, mtime, ctime, mode) → digest, in the `stat_cache` table.
