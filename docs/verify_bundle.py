#!/usr/bin/env python3
"""Verify a streamnotary proof bundle with nothing but the Python standard library.

    python3 verify_bundle.py --trust TRUST.json BUNDLE.json   (exit 0: verified, 1: not)

TRUST.json is the auditor's pinned trust policy (`streamnotary trust export`,
streamnotary.trust/v1): the log's origin and C2SP verifier key, and the ledger's identity
(chain, contract or stream, and the operator's address): every ledger reference of the
bundle must name that writer, so a bundle built on a third party's entry is rejected.
None of it is ever taken from the bundle. Bundles v1 (batch anchors, before the signed
log) verify without it.

Written for an outsider who does not want to install (or trust) streamnotary: it is one
file, uses only `hashlib` and `json`, and re-derives every hash in the bundle:

1. the record is canonical JSON of an observation inside the bundle's window;
2. RFC 6962 audit path: SHA-256(0x00 || record) climbs to the window's Merkle root;
3. the checkpoint's digest, SHA-256 of its RFC 8785 (JCS) bytes, is the one in the bundle;
4. the batch audit path takes that digest to the batch root;
5. the ledger entry bodies hash to the digests of their references and commit to the
   batch root (and to the window revision).

Bundle v2 (streamnotary.proof-bundle/2) replaces 4-5 by: the checkpoint digest is named
by the window's log entry; the entry's RFC 8785 bytes are included (RFC 9162 inclusion
proof) in a C2SP tlog-checkpoint whose signed-note Ed25519 signature verifies with the
pinned key (Ed25519 verification per RFC 8032 section 5.1.7, in pure Python below); that
head is consistent (RFC 9162 consistency proof) with the head anchored on the ledger.

What remains is online: ask the ledger named in the output for the entry key and check
that it holds the printed digest. Everything printed is escaped: no control character
or escape sequence from the bundle reaches the terminal.

RFC 8785 here is deliberately a SUBSET: checkpoints and records contain only objects,
arrays, strings, integers, booleans and null, so numbers are written as integers and
any float is refused (full JCS would need ECMAScript number formatting). Strings use
the JCS escaping (\\b \\t \\n \\f \\r \\" \\\\ and \\u00xx for other control characters,
everything else as UTF-8) and object keys are sorted by their UTF-16 code units.
"""

import datetime
import hashlib
import json
import re
import sys

BUNDLE_SCHEMA = "streamnotary.proof-bundle/1"
BUNDLE_SCHEMA_V2 = "streamnotary.proof-bundle/2"
TRUST_SCHEMA = "streamnotary.trust/v1"
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
        if abs(value) > 2**53 - 1:  # RFC 8785 numbers are IEEE 754 doubles (I-JSON)
            raise NotVerified("an integer is outside the exact range of JSON numbers (2**53)")
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


_UTC_TEXT = "%Y-%m-%dT%H:%M:%SZ"


def _window_of(window_id):
    """(start, end, size) of a window id; the same rule as tasks.window.WindowKey.parse."""
    m = _WINDOW_ID.fullmatch(window_id) if isinstance(window_id, str) else None
    if not m or not window_id.isascii():
        raise NotVerified(f"checkpoint window id {window_id!r} is malformed")
    size = int(m.group(3))
    try:
        start = datetime.datetime.strptime(m.group(2), "%Y%m%dT%H%M%SZ")
        end = start + datetime.timedelta(seconds=size)
    except (ValueError, OverflowError) as exc:
        raise NotVerified(f"checkpoint window id {window_id!r}: {exc}") from None
    epoch = datetime.datetime(1970, 1, 1)
    if size < 1 or (start - epoch).total_seconds() % size or m.group(3) != str(size):
        raise NotVerified(f"checkpoint window id {window_id!r} is not aligned to its size")
    return start.strftime(_UTC_TEXT), end.strftime(_UTC_TEXT), size


def _check_record(record):
    """The value rules of streamnotary.observation/1 (docs/schemas/observation.schema.json)."""

    def tenths(name, lo, hi):
        v = record[name]
        if v is not None and not (type(v) is int and lo <= v <= hi):
            raise NotVerified(f"record {name} {v!r} is not null or an integer {lo}..{hi}")

    q = record["quality_level"]
    if not (type(q) is int and 1 <= q <= 10):
        raise NotVerified(f"record quality_level {q!r} is not an integer 1..10")
    tenths("temperature_c_tenths", -800, 650)
    tenths("relative_humidity_pct_tenths", 0, 1000)
    sid, t = record["station_id"], record["observed_at"]
    if not (isinstance(sid, str) and sid.isascii() and re.fullmatch("[0-9]{5}", sid)):
        raise NotVerified(f"record station_id {sid!r} is not 5 digits")
    if not (isinstance(t, str) and t.isascii() and _TS.fullmatch(t)):
        raise NotVerified(f"record observed_at {t!r} is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = datetime.datetime.strptime(t, _UTC_TEXT)
    except ValueError as exc:
        raise NotVerified(f"record observed_at {t!r}: {exc}") from None
    if not 1800 <= when.year < 2200:
        raise NotVerified(f"record observed_at {t!r} is outside 1800..2199")


def _check_entry(evidence, key, expected):
    ref, body = evidence["ref"], evidence["body"]
    if ref["key"] != key:
        raise NotVerified("ledger reference names key {}, expected {}".format(ref["key"], key))
    if body != expected:
        raise NotVerified(f"ledger entry {key} does not commit to this checkpoint/batch")
    if digest(body) != ref["digest"]:
        raise NotVerified(f"ledger entry {key}: body does not hash to the referenced digest")


def _record_steps(bundle):
    """Steps 1-2 of every bundle version: the record, and its path to the window root."""
    steps = []
    try:
        cp = bundle["checkpoint"]
        record_text = bundle["record"]
        window = cp["window"]
        merkle = cp["merkle"]
    except (KeyError, TypeError) as exc:
        raise NotVerified(f"bundle lacks {exc}") from None
    if not isinstance(record_text, str):
        raise NotVerified("record is not a string")

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
    _check_record(record)
    start, end, size = _window_of(window["id"])
    if (window["station_id"], window["start"], window["end"], window["size_seconds"]) != (
        window["id"][:5],
        start,
        end,
        size,
    ):
        raise NotVerified("checkpoint window fields contradict its id {}".format(window["id"]))
    if record["station_id"] != window["id"][:5]:
        raise NotVerified(
            "record station {!r} is not the window's station".format(record["station_id"])
        )
    t = record["observed_at"]
    if not start <= t < end:
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

    return steps


# What a malformed bundle can raise in the steps (a missing member, a value of the wrong
# type, text that is not hex, an index past a list, nesting beyond the recursion limit).
# Each means the bundle does not verify: fail closed, with a name, never a traceback.
_MALFORMED = (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError)


def _fail_closed(step, *args):
    try:
        return step(*args)
    except NotVerified:
        raise
    except _MALFORMED as exc:
        raise NotVerified(f"malformed bundle ({type(exc).__name__}: {exc})") from None


def verify(bundle):
    """Return the list of verified steps; raise NotVerified at the first failing one.

    Any input gives one of the two answers, never another exception.
    """
    return _fail_closed(_verify_v1, bundle)


def verify_v2(bundle, trust):
    """`_verify_v2` (below), with every input giving a verdict."""
    return _fail_closed(_verify_v2, bundle, trust)


_HEX32 = re.compile("[0-9a-f]{64}")
_TOP = {"schema", "record", "leaf_index", "tree_size", "audit_path", "checkpoint"}
_TOP |= {"checkpoint_digest", "batch", "ledger"}
_REF = {"backend", "key", "digest", "locator", "confirmations", "required_confirmations"}


def _is_int(value, minimum):
    return type(value) is int and value >= minimum


def _shape_error(where, what):
    raise NotVerified(f"bundle invalid at {where}: {what}")


def _hashes(value):
    return isinstance(value, list) and all(
        isinstance(h, str) and _HEX32.fullmatch(h) for h in value
    )


def _check_evidence(ev, where):
    if not isinstance(ev, dict) or set(ev) != {"ref", "body"}:
        _shape_error(where, "must be an object with exactly ref and body")
    ref, body = ev["ref"], ev["body"]
    if not isinstance(ref, dict) or not set(ref) >= _REF:
        _shape_error(f"{where}/ref", f"must be an object with {sorted(_REF)}")
    if not isinstance(ref["backend"], str) or not isinstance(ref["key"], str):
        _shape_error(f"{where}/ref", "backend and key must be strings")
    if not isinstance(ref["digest"], str) or not _HEX32.fullmatch(ref["digest"]):
        _shape_error(f"{where}/ref/digest", "must be 64 lowercase hex digits")
    if not isinstance(ref["locator"], dict):
        _shape_error(f"{where}/ref/locator", "must be an object")
    for name in ("confirmations", "required_confirmations"):
        if not _is_int(ref[name], 0):
            _shape_error(f"{where}/ref/{name}", "must be an integer >= 0")
    if not isinstance(body, dict):
        _shape_error(f"{where}/body", "must be an object")


def _check_shape(bundle):
    """The checks of docs/schemas/proof_bundle.schema.json, by hand (no jsonschema here)."""
    if not isinstance(bundle, dict) or bundle.get("schema") != BUNDLE_SCHEMA:
        raise NotVerified(f"not a {BUNDLE_SCHEMA} document")
    if set(bundle) != _TOP:
        _shape_error("/", f"members must be exactly {sorted(_TOP)}")
    if not isinstance(bundle["record"], str):
        _shape_error("/record", "must be a string")
    if not _is_int(bundle["leaf_index"], 0) or not _is_int(bundle["tree_size"], 1):
        _shape_error("/leaf_index, /tree_size", "must be integers >= 0 and >= 1")
    if not _hashes(bundle["audit_path"]):
        _shape_error("/audit_path", "must be a list of 64-hex-digit hashes")
    if not isinstance(bundle["checkpoint"], dict):
        _shape_error("/checkpoint", "must be an object")
    digest_text = bundle["checkpoint_digest"]
    if not isinstance(digest_text, str) or not _HEX32.fullmatch(digest_text):
        _shape_error("/checkpoint_digest", "must be 64 lowercase hex digits")
    batch = bundle["batch"]
    if not isinstance(batch, dict) or set(batch) != {"key", "root", "size", "index", "proof"}:
        _shape_error("/batch", "must be an object with exactly key, root, size, index, proof")
    if not isinstance(batch["key"], str):
        _shape_error("/batch/key", "must be a string")
    if not isinstance(batch["root"], str) or not _HEX32.fullmatch(batch["root"]):
        _shape_error("/batch/root", "must be 64 lowercase hex digits")
    if not _is_int(batch["size"], 1) or not _is_int(batch["index"], 0):
        _shape_error("/batch/size, /batch/index", "must be integers >= 1 and >= 0")
    if not _hashes(batch["proof"]):
        _shape_error("/batch/proof", "must be a list of 64-hex-digit hashes")
    ledger = bundle["ledger"]
    if not isinstance(ledger, dict) or set(ledger) != {"batch", "window"}:
        _shape_error("/ledger", "must be an object with exactly batch and window")
    _check_evidence(ledger["batch"], "/ledger/batch")
    if ledger["window"] is not None:
        _check_evidence(ledger["window"], "/ledger/window")


def _verify_v1(bundle):
    _check_shape(bundle)
    steps = _record_steps(bundle)
    try:
        cp = bundle["checkpoint"]
        window = cp["window"]
        merkle = cp["merkle"]
        batch = bundle["batch"]
        topic = cp["source"]["topic"]
        ledger = bundle["ledger"]
    except (KeyError, TypeError) as exc:
        raise NotVerified(f"bundle lacks {exc}") from None

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
    steps.append(f"checkpoint {cp_digest} is leaf {batch['index']} of batch root {batch_root}")

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
    steps.append(
        "proved: {} revision {} (v1 bundle: batch anchor, no signed log; whether a later "
        "revision supersedes it is not proven)".format(window["id"], cp["revision"])
    )
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


# ---- Ed25519 verification, RFC 8032 section 5.1.7 (pure Python; slow but only one) ------

_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)


def _recover_x(y, sign):
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _I % _P
    if (x * x - x2) % _P:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_G = (_recover_x(_GY, 0), _GY, 1, _recover_x(_GY, 0) * _GY % _P)


def _add(a, b):
    aa = (a[1] - a[0]) * (b[1] - b[0]) % _P
    bb = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c = 2 * a[3] * b[3] * _D % _P
    d = 2 * a[2] * b[2] % _P
    e, f, g, h = bb - aa, d - c, d + c, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s, point):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, point)
        point = _add(point, point)
        s >>= 1
    return q


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % _P == 0 and (a[1] * b[2] - b[1] * a[2]) % _P == 0


def _decompress(data):
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def ed25519_verify(public, message, signature):
    """True iff `signature` is a valid Ed25519 signature of `message` by `public`."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a, r = _decompress(public), _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _Q
    return _equal(_mul(s, _G), _add(r, _mul(h, a)))


# ---- C2SP signed-note and tlog-checkpoint --------------------------------------------------


def _b64(text, what):
    import base64
    import binascii

    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NotVerified(f"{what} is not standard base64") from None


def load_trust(path):
    """(origin, name, key id, Ed25519 public key, ledger identity) from a trust/v1 file."""
    with open(path, "rb") as fh:
        doc = json.loads(fh.read().decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("schema") != TRUST_SCHEMA:
        raise NotVerified(f"trust policy is not a {TRUST_SCHEMA} document")
    try:
        origin, vkey = doc["log"]["origin"], doc["log"]["verifier_key"]
        name, kid_hex, material = vkey.split("+", 2)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise NotVerified(
            "trust policy lacks log.origin / log.verifier_key name+hash+key"
        ) from None
    raw = _b64(material, "verifier key")
    if len(raw) != 33 or raw[0] != 1 or not re.fullmatch("[0-9a-f]{8}", kid_hex):
        raise NotVerified("verifier key is not an Ed25519 C2SP key")
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if kid.hex() != kid_hex or name != origin:
        raise NotVerified("verifier key hash or name does not match the pinned origin")
    ledger = doc.get("ledger")
    if not isinstance(ledger, dict) or not isinstance(ledger.get("backend"), str):
        raise NotVerified("trust policy lacks the ledger identity")
    return origin, name, kid, raw[1:], ledger


def check_ref_identity(ref, identity):
    """The ledger reference names the pinned ledger and writer (as far as its locator
    tells; a locator that lies about its writer is caught by the online lookup). A bundle
    built on a third party's entry on the same chain or stream is rejected here."""
    backend, key, loc = identity["backend"], ref.get("key"), ref.get("locator")
    if ref.get("backend") != backend:
        raise NotVerified(
            "ledger entry {} is on a {} ledger, not on the pinned {} ledger".format(
                key, ref.get("backend"), backend
            )
        )
    if not isinstance(loc, dict):
        raise NotVerified(f"ledger entry {key} has no locator")
    if backend == "evm":
        if (
            loc.get("chain_id") != identity.get("chain_id")
            or str(loc.get("contract", "")).lower() != str(identity.get("contract")).lower()
        ):
            raise NotVerified(f"ledger entry {key} is not on the pinned chain and contract")
        if str(loc.get("sender", "")).lower() != str(identity.get("operator")).lower():
            raise NotVerified(
                "ledger entry {} was anchored by {}, not by the pinned operator {}".format(
                    key, loc.get("sender"), identity.get("operator")
                )
            )
        return f"ledger entry {key} names the pinned contract and operator"
    if backend == "multichain":
        if loc.get("stream") != identity.get("stream"):
            raise NotVerified(f"ledger entry {key} is not in the pinned stream")
        if loc.get("publisher") not in (identity.get("publishers") or []):
            raise NotVerified(
                "ledger entry {} was published by {}, not by a pinned publisher".format(
                    key, loc.get("publisher")
                )
            )
        return f"ledger entry {key} names the pinned stream and publisher"
    if backend == "bitcoin":
        if loc.get("address") != identity.get("operator_address"):
            raise NotVerified(f"ledger entry {key} is not paid by the pinned operator")
        return f"ledger entry {key} names the pinned operator address"
    return f"ledger entry {key} is on the pinned {backend} ledger (its writer is checked online)"


def bundle_refs(bundle):
    """The ledger references a verified bundle relies on (v1 or v2)."""
    if bundle.get("schema") == BUNDLE_SCHEMA_V2:
        window = bundle["anchor"].get("window")
        return [bundle["anchor"]["ref"]] + (
            [window["ref"]] if isinstance(window, dict) and "ref" in window else []
        )
    ledger = bundle["ledger"]
    return [ledger["batch"]["ref"]] + ([ledger["window"]["ref"]] if ledger["window"] else [])


def open_signed_checkpoint(note, trust):
    """Verify the pinned key's signature on a C2SP note; return (origin, size, root hex)."""
    origin, name, kid, public = trust[:4]
    if not isinstance(note, str) or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NotVerified("signed checkpoint is not a note")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NotVerified("signed checkpoint has no signature block")
    text, block = note[: split + 1], note[split + 2 : -1]
    verified = False
    for line in block.split("\n"):
        if not line.startswith("\u2014 "):
            raise NotVerified("signature line does not start with an em dash")
        signer, _, blob = line[2:].rpartition(" ")
        raw = _b64(blob, "signature")
        if signer != name or raw[:4] != kid:
            continue  # signed-note: signatures by unknown keys are ignored
        if not ed25519_verify(public, text.encode("utf-8"), raw[4:]):
            raise NotVerified("the pinned key's signature on the checkpoint does not verify")
        verified = True
    if not verified:
        raise NotVerified("the checkpoint carries no signature by the pinned key")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or lines[0] != origin:
        raise NotVerified("checkpoint is not of the pinned log (origin line)")
    if not re.fullmatch("0|[1-9][0-9]*", lines[1]):
        raise NotVerified("checkpoint tree size is not a canonical decimal")
    root = _b64(lines[2], "checkpoint root")
    if len(root) != 32:
        raise NotVerified("checkpoint root is not 32 bytes")
    return origin, int(lines[1]), root.hex()


def consistency_ok(old_size, new_size, old_root, new_root, proof):
    """RFC 9162 section 2.1.4.2 consistency proof verification (roots as bytes)."""
    path = [_hex32(h, "consistency proof hash") for h in proof]
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not path and old_root == new_root
    if old_size == 0:
        return not path
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def _verify_v2(bundle, trust):
    """Bundle v2: steps 1-2 as v1, then log entry -> signed head -> anchored head."""
    steps = _record_steps(bundle)
    cp = bundle["checkpoint"]
    log, anchor = bundle["log"], bundle["anchor"]
    entry = log["entry"]
    cp_digest = digest(cp)
    if cp_digest != bundle["checkpoint_digest"]:
        raise NotVerified("checkpoint digest differs from the bundle's")
    if not isinstance(entry, dict) or entry.get("type") != "window":
        raise NotVerified("log entry is not a window entry")
    named = (entry.get("topic"), entry.get("window_id"), entry.get("revision"))
    if named != (cp["source"]["topic"], cp["window"]["id"], cp["revision"]):
        raise NotVerified("log entry names another window revision")
    ranges = {str(r["partition"]): [[r["start"], r["end"]]] for r in cp["source"]["ranges"]}
    if entry.get("checkpoint_digest") != cp_digest or entry.get("ranges") != ranges:
        raise NotVerified("log entry names another checkpoint digest or other ranges")
    steps.append(
        "checkpoint {} is the one log entry {} names for {} r{}".format(
            cp_digest, log["index"], cp["window"]["id"], cp["revision"]
        )
    )
    _origin, size, root = open_signed_checkpoint(log["checkpoint"], trust)
    if size != log["size"]:
        raise NotVerified("signed head size differs from the proof's")
    if inclusion_root(jcs(entry).encode("utf-8"), log["index"], size, log["proof"]) != root:
        raise NotVerified("log entry is not in the signed log head")
    steps.append(
        "log entry {} is in the head of size {} signed by {}+{} (pinned)".format(
            log["index"], size, trust[1], trust[2].hex()
        )
    )
    topic = cp["source"]["topic"]
    body, ref = anchor["body"], anchor["ref"]
    a_size, a_root = body.get("size"), body.get("root")
    if body.get("kind") != "head" or body.get("topic") != topic:
        raise NotVerified("anchor is not a log head entry of this topic")
    if not isinstance(a_size, int) or isinstance(a_size, bool) or a_size < size:
        raise NotVerified("anchored head is malformed or older than the signed head")
    if ref.get("key") != f"head/{topic}/{a_size}" or digest(body) != ref.get("digest"):
        raise NotVerified("anchored head reference does not match its body")
    a_root = _hex32(a_root, "anchored root")
    if not consistency_ok(size, a_size, bytes.fromhex(root), a_root, anchor["consistency"]):
        raise NotVerified("signed head is not a prefix of the anchored head")
    steps.append(
        f"the signed head is consistent with the anchored head of size {a_size}"
        + (" (same head)" if a_size == size else f" (consistency proof {size} -> {a_size})")
    )
    steps.append(
        "proved: {} revision {} (checkpoint {}...); a later revision would supersede it "
        "(verify-proof --online checks)".format(cp["window"]["id"], cp["revision"], cp_digest[:16])
    )
    steps.append(
        "to finish online: on the pinned {} ledger, entry {} must have digest {} "
        "(locator {})".format(
            ref.get("backend"),
            ref.get("key"),
            ref.get("digest"),
            json.dumps(ref.get("locator"), sort_keys=True),
        )
    )
    return steps


MAX_DEPTH = 64  # as `streamnotary verify-proof` (tasks.canonical.MAX_DOCUMENT_DEPTH)


def _depth(value):
    """Nesting depth of a decoded JSON value (iteratively: it may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def printable(text):
    """Escape every non-printable character (and the backslash) of `text`."""
    return "".join(
        ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def main(argv):
    args = argv[1:]
    trust_path = None
    if len(args) == 3 and args[0] == "--trust":
        trust_path, args = args[1], args[2:]
    if len(args) != 1:
        print("usage: verify_bundle.py [--trust TRUST.json] BUNDLE.json", file=sys.stderr)
        return 2
    try:
        trust = load_trust(trust_path) if trust_path else None
        with open(args[0], "rb") as fh:
            bundle = json.loads(fh.read().decode("utf-8"))
        if _depth(bundle) > MAX_DEPTH:
            raise NotVerified(f"JSON nesting deeper than {MAX_DEPTH}")
        if isinstance(bundle, dict) and bundle.get("schema") == BUNDLE_SCHEMA_V2:
            if trust is None:
                raise NotVerified("a v2 bundle is verified against a pinned key: give --trust")
            steps = verify_v2(bundle, trust)
        else:
            steps = verify(bundle)
        if trust is not None:
            steps += [check_ref_identity(ref, trust[4]) for ref in bundle_refs(bundle)]
    except (NotVerified, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(printable(f"NOT VERIFIED: {exc}"))
        return 1
    except RecursionError:
        print("NOT VERIFIED: bundle is nested too deeply")
        return 1
    for s in steps:
        print(printable("ok  " + s))
    print("VERIFIED (offline part); finish with the ledger lookup above")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
