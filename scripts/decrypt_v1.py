#!/usr/bin/env python3
"""Independent decryptor for selmai-backup encrypted files, format version 1.

Written from docs/FORMAT.md alone, to prove the document is complete and to
let an operator open a backup without our binary. Needs Python 3.9+ and the
`cryptography` package (>= 44, for Argon2id).

    BACKUP_PASSPHRASE=... python3 scripts/decrypt_v1.py IN.sql.gz.enc OUT.sql.gz
    python3 scripts/decrypt_v1.py --passphrase-file FILE IN OUT      (OUT may be -)
    python3 scripts/decrypt_v1.py --verbose ...   also prints the derived keys (test files only!)

Exits 0 on success; 2 wrong passphrase; 3 damaged/truncated/tampered; 1 other.
Plaintext is written only after its segment verified; on failure OUT (a
file) is removed, since its content would be incomplete.
"""
import argparse
import hashlib
import hmac
import os
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

MAGIC = b"\x89SELMAI\n"
HEADER_LEN = 91
TAG_LEN = 16


class Fail(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


def hkdf_expand_32(prk, info):
    # HKDF-Expand with L = 32 is a single HMAC block: T(1) = HMAC(PRK, info || 0x01).
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def parse_header(h):
    if len(h) < 9 or h[:8] != MAGIC:
        raise Fail(3, "not a selmai-backup encrypted file (magic)")
    if h[8] != 1:
        raise Fail(1, f"unsupported version {h[8]}")
    if len(h) < HEADER_LEN:
        raise Fail(3, "truncated header")
    if hashlib.sha256(h[:83]).digest()[:8] != h[83:91]:
        raise Fail(3, "header checksum mismatch: header damaged")
    if h[9] != 1 or h[10] != 1 or h[11] != 0:
        raise Fail(3, "unknown algorithm, KDF or flags")
    be = lambda o: int.from_bytes(h[o:o + 4], "big")
    seg, m, t, p = be(12), be(16), be(20), be(24)
    if not (1024 <= seg <= 16 * 1024 * 1024):
        raise Fail(3, f"segment size {seg} out of range")
    if not (8192 <= m <= 1048576 and 1 <= t <= 10 and 1 <= p <= 16):
        raise Fail(3, f"KDF parameters out of range: m={m} t={t} p={p}")
    return seg, m, t, p, h[28:44], h[44:51]


def decrypt(inp, out, passphrase, verbose=False):
    header = inp.read(HEADER_LEN)
    seg, m, t, p, salt, prefix = parse_header(header)
    master = Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(passphrase)
    header_key = hkdf_expand_32(master, b"selmai-backup v1 header key")
    payload_key = hkdf_expand_32(master, b"selmai-backup v1 payload key")
    if verbose:
        print(f"segment size {seg}, argon2id m={m} t={t} p={p}", file=sys.stderr)
        print(f"salt         {salt.hex()}\nnonce prefix {prefix.hex()}", file=sys.stderr)
        print(f"master       {master.hex()}\nheader key   {header_key.hex()}", file=sys.stderr)
        print(f"payload key  {payload_key.hex()}", file=sys.stderr)
    mac = hmac.new(header_key, header[:51], hashlib.sha256).digest()
    if not hmac.compare_digest(mac, header[51:83]):
        raise Fail(2, "wrong passphrase (header MAC mismatch, checksum intact)")
    aead = AESGCM(payload_key)
    wire = seg + TAG_LEN
    i = 0
    while True:
        offset = HEADER_LEN + i * wire
        chunk = inp.read(wire)
        if len(chunk) < wire:
            raise Fail(3, f"truncated at segment {i} (offset {offset}, {len(chunk)} of {wire} bytes)")
        if i >= 2**32:
            raise Fail(3, "too many segments")
        for last in (0, 1):
            nonce = prefix + i.to_bytes(4, "big") + bytes([last])
            try:
                plain = aead.decrypt(nonce, chunk, header)
                break
            except InvalidTag:
                plain = None
        if plain is None:
            raise Fail(3, f"segment {i} at offset {offset} failed authentication")
        if not last:
            out.write(plain)
            i += 1
            continue
        body = plain.rstrip(b"\x00")
        if not body.endswith(b"\x80"):
            raise Fail(3, f"final segment {i} has invalid padding")
        if inp.read(1):
            raise Fail(3, f"data after the final segment at offset {offset + wire}")
        out.write(body[:-1])
        return


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output", help="file, or - for stdout")
    ap.add_argument("--passphrase-file")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    if a.passphrase_file:
        with open(a.passphrase_file, "rb") as f:
            pw = f.read().rstrip(b"\r\n")
    else:
        pw = os.environb.get(b"BACKUP_PASSPHRASE", b"")
    if not pw:
        print("no passphrase: set BACKUP_PASSPHRASE or use --passphrase-file", file=sys.stderr)
        return 2
    to_stdout = a.output == "-"
    try:
        with open(a.input, "rb") as inp:
            out = sys.stdout.buffer if to_stdout else open(a.output + ".partial", "wb")
            try:
                decrypt(inp, out, pw, a.verbose)
            except BaseException:
                if not to_stdout:
                    out.close()
                    os.unlink(a.output + ".partial")
                raise
            if not to_stdout:
                out.close()
                os.replace(a.output + ".partial", a.output)
    except Fail as e:
        print(f"{a.input}: {e}", file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
