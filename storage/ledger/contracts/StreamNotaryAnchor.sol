// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title StreamNotaryAnchor
/// @notice Append-only anchors of streamnotary ledger entries. There is no owner, no
/// upgrade path and no way to change or remove an anchor: once a sender anchored an entry
/// under a key, that (sender, key) is bound to that digest forever, so an operator cannot
/// rewrite history.
/// @dev Entries are keyed by (msg.sender, key): anyone may call `anchor`, but a third party
/// writes only under its own address, so it can neither squat the operator's next key (its
/// entry does not block the operator's) nor forge one (auditors accept only the pinned
/// operator's address, which is an indexed topic of every event). The canonical JSON body
/// travels in the event so that an auditor can rebuild it from the chain alone and
/// recompute its SHA-256 digest.
contract StreamNotaryAnchor {
    /// @notice sender => keccak256(key) => SHA-256 digest of the canonical body (zero: not
    /// anchored).
    mapping(address => mapping(bytes32 => bytes32)) public digestOf;

    /// @notice Emitted once per (sender, key). `root` is the batch Merkle root (indexed:
    /// lookup by root), `keyHash` = keccak256(bytes(key)) (indexed: lookup by idempotency
    /// key), `sender` = msg.sender (indexed: only the pinned operator's events count).
    event Anchored(
        bytes32 indexed root,
        bytes32 indexed keyHash,
        address indexed sender,
        string key,
        bytes32 digest,
        string body
    );

    /// @notice The sender already bound the key to a digest (another one, or the same one:
    /// a duplicate).
    error AlreadyAnchored(bytes32 keyHash, bytes32 digest);

    /// @notice The zero digest is reserved for "not anchored".
    error ZeroDigest();

    /// @notice Anchor `body` (canonical JSON whose SHA-256 is `digest`) under `key`.
    /// @dev Reverts if the sender already anchored the key, which makes anchoring race-free:
    /// of two concurrent transactions of the operator exactly one succeeds and the other
    /// finds its anchor by key.
    function anchor(bytes32 root, string calldata key, bytes32 digest, string calldata body)
        external
    {
        if (digest == bytes32(0)) revert ZeroDigest();
        bytes32 keyHash = keccak256(bytes(key));
        bytes32 existing = digestOf[msg.sender][keyHash];
        if (existing != bytes32(0)) revert AlreadyAnchored(keyHash, existing);
        digestOf[msg.sender][keyHash] = digest;
        emit Anchored(root, keyHash, msg.sender, key, digest, body);
    }
}
