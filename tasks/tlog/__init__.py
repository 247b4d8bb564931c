"""The anchor log: a C2SP tiled transparency log of streamnotary log entries (pure code).

* `tasks.tlog.note` — C2SP signed-note (Ed25519 signer and verifier keys, sign, open);
* `tasks.tlog.checkpoint` — C2SP tlog-checkpoint note text (origin, size, root);
* `tasks.tlog.tiles` — C2SP tlog-tiles paths, tiles, entry bundles, and RFC 6962 tree
  hashes and proofs computed from tiles instead of from every leaf;
* `tasks.tlog.entries` — the log entry documents (`streamnotary.log_entry/v1`).

Object I/O lives in `storage.tlog`; the design is in docs/design.md ("The anchor log").
"""
