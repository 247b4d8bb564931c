// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title StreamNotaryAnchor
/// @notice Append-only anchors of streamnotary ledger entries. There is no owner, no
/// upgrade path and no way to change or remove an anchor: once an entry is anchored under
/// a key, that key is bound to that digest forever, so an operator cannot rewrite history.
/// @dev The canonical JSON body travels in the event so that an auditor can rebuild it
/// from the chain alone and recompute its SHA-256 digest.
contract StreamNotaryAnchor {
    /// @notice keccak256(key) => SHA-256 digest of the canonical body (zero: not anchored).
    mapping(bytes32 => bytes32) public digestOf;

    /// @notice Emitted once per key. `root` is the batch Merkle root (indexed: lookup by root),
    /// `keyHash` = keccak256(bytes(key)) (indexed: lookup by idempotency key).
    event Anchored(
        bytes32 indexed root,
        bytes32 indexed keyHash,
        string key,
        bytes32 digest,
        string body,
        address sender
    );

    /// @notice The key is already bound to another digest (or the same one: a duplicate).
    error AlreadyAnchored(bytes32 keyHash, bytes32 digest);

    /// @notice The zero digest is reserved for "not anchored".
    error ZeroDigest();

    /// @notice Anchor `body` (canonical JSON whose SHA-256 is `digest`) under `key`.
    /// @dev Reverts if the key is already anchored, which makes anchoring race-free: of two
    /// concurrent writers exactly one succeeds and the other finds its anchor by key.
    function anchor(bytes32 root, string calldata key, bytes32 digest, string calldata body)
        external
    {
        if (digest == bytes32(0)) revert ZeroDigest();
        bytes32 keyHash = keccak256(bytes(key));
        bytes32 existing = digestOf[keyHash];
        if (existing != bytes32(0)) revert AlreadyAnchored(keyHash, existing);
        digestOf[keyHash] = digest;
        emit Anchored(root, keyHash, key, digest, body, msg.sender);
    }
}
