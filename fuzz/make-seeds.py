#!/usr/bin/env python3
"""make-seeds.py: write the seed corpora of the frame fuzz targets from spec/vectors.txt.

Run from the repository root after changing the vectors; the files are checked in.
  frame_roundtrip/  each vector's bytes as they are
  frame_stream/     each vector prefixed with two control bytes (piece size, max), plus one
                    stream of every valid vector back to back
  frame_payload/    action byte + payload of each vector whose header is complete
"""
import hashlib
import os
import re
import sys


def vectors(path):
    out, cur = [], None
    for line in open(path):
        if line.startswith("#") or ":" not in line:
            continue
        key, val = line.split(":", 1)
        val = val.strip()
        if key == "name":
            cur = {"name": val, "hex": "", "expect": ""}
            out.append(cur)
        elif key == "hex":
            cur["hex"] += re.sub(r"[ |]", "", val)
        elif key == "expect":
            cur["expect"] = val
    for v in out:
        v["bytes"] = bytes.fromhex(v["hex"])
    return out


def put(target, data):
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    vs = vectors(sys.argv[1] if len(sys.argv) > 1 else "spec/vectors.txt")
    stream = b""
    for v in vs:
        b = v["bytes"]
        put("frame_roundtrip", b)
        put("frame_stream", bytes([7, 1]) + b)
        put("frame_stream", bytes([0, 1]) + b)
        if len(b) >= 16:
            put("frame_payload", bytes([b[12]]) + b[16:])
        if v["expect"] == "ok":
            stream += b
    put("frame_stream", bytes([63, 1]) + stream)
    put("frame_stream", bytes([2, 0]) + stream)


if __name__ == "__main__":
    main()
