#!/usr/bin/env python3
"""Verify a streamnotary proof bundle with nothing but the Python standard library.

    python3 verify_bundle.py BUNDLE.json          (exit 0: verified, 1: not verified)

Written for an outsider who does not want to install (or trust) streamnotary: it is one
file, uses only `hashlib` and `json`, and re-derives every hash in the bundle:

1. the record is canonical JSON of an observation inside the bundle's window;
2. RFC 6962 audit path: SHA-256(0x00 || record) climbs to the window's Merkle root;
3. the checkpoint's digest, SHA-256 of its RFC 8785 (JCS) bytes, is the one in the bundle;
4. the batch audit path takes that digest to the batch root;
5. the ledger entry bodies hash to the digests of their references and commit to the
   batch root (and to the window revision).

What remains is online: ask the ledger named in the output for the entry key and check
that it holds the printed digest.

RFC 8785 here is deliberately a SUBSET: checkpoints and records contain only objects,
arrays, strings, integers, booleans and null, so numbers are written as integers and
any float is refused (full JCS would need ECMAScript number formatting). Strings use
the JCS escaping (\\b \\t \\n \\f \\r \\" \\\\ and \\u00xx for other control characters,
everything else as UTF-8) and object keys are sorted by their UTF-16 code units.
"""

import hashlib
import json
import re
import sys

BUNDLE_SCHEMA = "streamnotary.proof-bundle/1"
_ESCAPES = {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}


class NotVerified(Exception):
    """A step of the verification failed."""


# ---- RFC 8785 (subset: no floats) ------------------------------------------------------


def _jcs_string(s):
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if cp in _ESCAPES:
            out.append(_ESCAPES[cp])
        elif cp < 0x20:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_key(s):
    return s.encode("utf-16-be")


def jcs(value):
    """RFC 8785 text of `value` (objects, arrays, strings, ints, booleans, null only)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _utf16_key(kv[0]))
        return "{" + ",".join(_jcs_string(k) + ":" + jcs(v) for k, v in items) + "}"
    raise NotVerified(
        f"value of type {type(value).__name__} is outside the JCS subset this verifier supports"
    )


def digest(value):
    return hashlib.sha256(jcs(value).encode("utf-8")).hexdigest()


# ---- RFC 6962 / RFC 9162 inclusion proof ---------------------------------------------------


def _node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def _hex32(text, what):
    if not isinstance(text, str) or not re.fullmatch("[0-9a-f]{64}", text):
        raise NotVerified(f"{what} is not 32 bytes of lowercase hex")
    return bytes.fromhex(text)


def inclusion_root(leaf, index, size, path):
    """RFC 9162 section 2.1.3.2: the root implied by an audit path for `leaf` (raw bytes)."""
    if not isinstance(index, int) or not isinstance(size, int) or not 0 <= index < size:
        raise NotVerified(f"leaf index {index!r} outside tree of size {size!r}")
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + leaf).digest()
    for i, p in enumerate(path):
        p = _hex32(p, f"audit path hash {i}")
        if sn == 0:
            raise NotVerified("audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise NotVerified("audit path is shorter than the tree is deep")
    return r.hex()


# ---- the bundle --------------------------------------------------------------------------

_RECORD_FIELDS = [
    "observed_at",
    "quality_level",
    "relative_humidity_pct_tenths",
    "station_id",
    "temperature_c_tenths",
]
_WINDOW_ID = re.compile(r"^([0-9]{5})_([0-9]{8}T[0-9]{6}Z)_([0-9]+)s$")
_TS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def _compact(ts):
    """'2019-09-07T17:00:00Z' -> '20190907T170000Z' (same order as the instant)."""
    return ts[0:4] + ts[5:7] + ts[8:10] + "T" + ts[11:13] + ts[14:16] + ts[17:19] + "Z"


def _check_entry(evidence, key, expected):
    ref, body = evidence["ref"], evidence["body"]
    if ref["key"] != key:
        raise NotVerified("ledger reference names key {}, expected {}".format(ref["key"], key))
    if body != expected:
        raise NotVerified(f"ledger entry {key} does not commit to this checkpoint/batch")
    if digest(body) != ref["digest"]:
        raise NotVerified(f"ledger entry {key}: body does not hash to the referenced digest")


def verify(bundle):
    """Return the list of verified steps; raise NotVerified at the first failing one."""
    steps = []
    if not isinstance(bundle, dict) or bundle.get("schema") != BUNDLE_SCHEMA:
        raise NotVerified(f"not a {BUNDLE_SCHEMA} document")
    try:
        cp = bundle["checkpoint"]
        record_text = bundle["record"]
        window = cp["window"]
        merkle = cp["merkle"]
        batch = bundle["batch"]
        topic = cp["source"]["topic"]
        ledger = bundle["ledger"]
    except (KeyError, TypeError) as exc:
        raise NotVerified(f"bundle lacks {exc}") from None

    # 1. the record: canonical, an observation, inside the window
    record_bytes = record_text.encode("utf-8")
    try:
        record = json.loads(record_bytes)
    except ValueError as exc:
        raise NotVerified(f"record is not JSON: {exc}") from None
    if not isinstance(record, dict) or sorted(record) != _RECORD_FIELDS:
        raise NotVerified("record does not have exactly the observation fields")
    if jcs(record).encode("utf-8") != record_bytes:
        raise NotVerified("record is not in canonical (RFC 8785) form")
    m = _WINDOW_ID.match(window["id"])
    if not m:
        raise NotVerified("checkpoint window id {!r} is malformed".format(window["id"]))
    if record["station_id"] != m.group(1) or window["station_id"] != m.group(1):
        raise NotVerified(
            "record station {!r} is not the window's station".format(record["station_id"])
        )
    t = record["observed_at"]
    if not (
        isinstance(t, str)
        and _TS.match(t)
        and _TS.match(window["start"])
        and _TS.match(window["end"])
    ):
        raise NotVerified("record or window timestamps are malformed")
    if _compact(window["start"]) != m.group(2) or not window["start"] <= t < window["end"]:
        raise NotVerified("record time {} is outside window {}".format(t, window["id"]))
    steps.append("record is canonical and falls in window {}".format(window["id"]))

    # 2. record -> window root
    if bundle["tree_size"] != merkle["size"]:
        raise NotVerified(
            "tree size {!r} differs from the checkpoint's {!r}".format(
                bundle["tree_size"], merkle["size"]
            )
        )
    root = inclusion_root(
        record_bytes, bundle["leaf_index"], bundle["tree_size"], bundle["audit_path"]
    )
    if root != merkle["root"]:
        raise NotVerified(
            "record path gives root {}, checkpoint says {}".format(root, merkle["root"])
        )
    steps.append(
        f"leaf {bundle['leaf_index']} of {bundle['tree_size']} hashes to window root {root}"
    )

    # 3. checkpoint -> batch root
    cp_digest = digest(cp)
    if cp_digest != bundle["checkpoint_digest"]:
        raise NotVerified(
            "checkpoint digests to {}, bundle says {}".format(
                cp_digest, bundle["checkpoint_digest"]
            )
        )
    batch_root = inclusion_root(
        bytes.fromhex(cp_digest), batch["index"], batch["size"], batch["proof"]
    )
    if batch_root != batch["root"]:
        raise NotVerified(
            "batch path gives root {}, bundle says {}".format(batch_root, batch["root"])
        )
    steps.append(
        f"checkpoint {cp_digest} is leaf {batch['index']} of batch root {batch_root}"
    )

    # 4. ledger entries
    _check_entry(
        ledger["batch"],
        f"batch/{topic}/{batch_root}",
        {"kind": "batch", "topic": topic, "root": batch_root, "size": batch["size"]},
    )
    refs = [ledger["batch"]["ref"]]
    if ledger.get("window") is not None:
        _check_entry(
            ledger["window"],
            f"window/{topic}/{window['id']}/r{cp['revision']}",
            {
                "kind": "window",
                "topic": topic,
                "window_id": window["id"],
                "station_id": window["station_id"],
                "revision": cp["revision"],
                "checkpoint_digest": cp_digest,
                "merkle_root": merkle["root"],
                "batch_root": batch_root,
            },
        )
        refs.append(ledger["window"]["ref"])
    steps.append("ledger entry bodies match their digests and commit to the batch root")
    for ref in refs:
        steps.append(
            "to finish online: on the {} ledger, entry {} must have digest {} (locator {})".format(
                ref["backend"],
                ref["key"],
                ref["digest"],
                json.dumps(ref["locator"], sort_keys=True),
            )
        )
    return steps


def main(argv):
    if len(argv) != 2:
        print("usage: verify_bundle.py BUNDLE.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1], "rb") as fh:
            bundle = json.loads(fh.read().decode("utf-8"))
        steps = verify(bundle)
    except (NotVerified, ValueError, KeyError, TypeError) as exc:
        print(f"NOT VERIFIED: {exc}")
        return 1
    for s in steps:
        print("ok  " + s)
    print("VERIFIED (offline part); finish with the ledger lookup above")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
