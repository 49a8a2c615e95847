#!/usr/bin/env python3
# tar-nodes.py — split device nodes out of a root filesystem tarball, for
# building images without root.
#
# Usage: tar-nodes.py NODES_SCRIPT < ROOTFS.tar > ROOTFS-without-nodes.tar
#
# An unprivileged user (even as root of a user namespace) cannot mknod(2), so
# `tar -x` of a tree that holds /dev/null fails. This filter copies the
# archive from stdin to stdout (uncompressed, PAX format) leaving out the
# character and block device entries, and writes, for each one, the debugfs
# commands that create it with the same mode, owner, group and mtime in the
# finished ext4 image (`debugfs -w -f NODES_SCRIPT image.ext4`). A hard link to
# a device node becomes a node of its own.
#
# Input may be plain, gzip, bzip2 or xz (tarfile's "r|*"); the caller
# decompresses zstd. Exit status 0, or 1 with a message on stderr (a name that
# debugfs cannot quote, a broken archive). Single-threaded, streaming: memory
# does not grow with the archive.
import sys
import tarfile


def clean(name):
    """Absolute path inside the image for a member name ('./dev/null')."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("member name %r leaves the tree" % name)
    return "/" + "/".join(parts)


def quote(path):
    if '"' in path or "\n" in path or "\\" in path:
        raise ValueError("device node name %r cannot be given to debugfs" % path)
    return '"%s"' % path


def emit_node(out, path, info):
    parent, base = path.rsplit("/", 1)
    kind = "c" if info.ischr() else "b"
    typ = 0o020000 if info.ischr() else 0o060000
    out.write("cd %s\n" % quote(parent or "/"))
    out.write("mknod %s %s %d %d\n" % (quote(base), kind, info.devmajor, info.devminor))
    q = quote(path)
    out.write("sif %s mode 0%o\n" % (q, typ | (info.mode & 0o7777)))
    out.write("sif %s uid %d\n" % (q, info.uid))
    out.write("sif %s gid %d\n" % (q, info.gid))
    out.write("sif %s mtime %d\n" % (q, int(info.mtime)))


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: tar-nodes.py NODES_SCRIPT < in.tar > out.tar\n")
        return 2
    nodes = {}
    with open(sys.argv[1], "w", encoding="utf-8") as script, \
            tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as src, \
            tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            if info.ischr() or info.isblk():
                path = clean(info.name)
                nodes[path] = info
                emit_node(script, path, info)
                continue
            if info.islnk() and clean(info.linkname) in nodes:
                node = nodes[clean(info.linkname)]
                copy = tarfile.TarInfo(info.name)
                for attr in ("type", "mode", "uid", "gid", "mtime", "devmajor", "devminor"):
                    setattr(copy, attr, getattr(node, attr))
                emit_node(script, clean(info.name), copy)
                continue
            dst.addfile(info, src.extractfile(info) if info.isreg() else None)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, tarfile.TarError, OSError) as e:
        sys.stderr.write("tar-nodes: %s\n" % e)
        sys.exit(1)
