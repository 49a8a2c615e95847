#!/usr/bin/env python3
"""store_objects.py — reach into a local lanes store's objects for tests.

Objects live in pack files indexed by STORE/objects/index.db (see
docs/nbdkit-laneslocal-plugin.md, FILES), or as loose files in stores from
before packs.  Tests use this to damage, lose or age objects on purpose.

  store_objects.py locate STORE HEX        -> "PATH OFFSET LENGTH"
  store_objects.py corrupt STORE HEX [OFF] flip one data byte (default 1000)
  store_objects.py forget STORE HEX        lose the object (index row / file)
  store_objects.py count STORE             number of objects
  store_objects.py first STORE             id of some stored object
  store_objects.py age STORE SECONDS       make every object that old
  store_objects.py unindexed STORE         pack bytes beyond the committed ends
"""
import glob
import os
import sqlite3
import sys
import time


def db(store):
    c = sqlite3.connect(os.path.join(store, "objects", "index.db"), timeout=10)
    return c


def pack_path(store, pack):
    return os.path.join(store, "objects", "packs", "%016x.pack" % pack)


def loose_path(store, hexid):
    return os.path.join(store, "objects", hexid[:2], hexid[2:])


def locate(store, hexid):
    row = db(store).execute("SELECT pack, off, len FROM objects WHERE id=?",
                            (bytes.fromhex(hexid),)).fetchone()
    if row:
        return pack_path(store, row[0]), row[1], row[2]
    p = loose_path(store, hexid)
    if os.path.exists(p):
        return p, 0, os.path.getsize(p)
    sys.exit("object %s not found in %s" % (hexid, store))


def main(argv):
    cmd, store = argv[1], argv[2]
    if cmd == "locate":
        print("%s %d %d" % locate(store, argv[3]))
    elif cmd == "corrupt":
        path, off, length = locate(store, argv[3])
        rel = int(argv[4]) if len(argv) > 4 else 1000
        assert rel < length
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(off + rel)
            b = f.read(1)
            f.seek(off + rel)
            f.write(bytes([b[0] ^ 0x5A]))
    elif cmd == "forget":
        c = db(store)
        n = c.execute("DELETE FROM objects WHERE id=?",
                      (bytes.fromhex(argv[3]),)).rowcount
        c.commit()
        if not n:
            os.unlink(loose_path(store, argv[3]))
    elif cmd == "count":
        n = db(store).execute("SELECT count(*) FROM objects").fetchone()[0]
        n += len(glob.glob(os.path.join(store, "objects", "??", "*")))
        print(n)
    elif cmd == "first":
        row = db(store).execute("SELECT hex(id) FROM objects ORDER BY pack, off "
                                "LIMIT 1").fetchone()
        print(row[0].lower())
    elif cmd == "age":
        t = time.time() - int(argv[3])
        c = db(store)
        c.execute("UPDATE objects SET t=?", (int(t * 1e9),))
        c.commit()
        for p in glob.glob(os.path.join(store, "objects", "**"), recursive=True):
            if os.path.isfile(p):
                os.utime(p, (t, t))
    elif cmd == "unindexed":
        committed = dict(db(store).execute("SELECT id, committed FROM packs"))
        total = 0
        for p in glob.glob(os.path.join(store, "objects", "packs", "*.pack")):
            pack = int(os.path.basename(p)[:16], 16)
            total += max(0, os.path.getsize(p) - committed.get(pack, 0))
        print(total)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
