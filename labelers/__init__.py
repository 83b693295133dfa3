"""Labeler families (optical flow, camera, depth, dynamic masks) behind small protocols.

Import the family modules directly (e.g. `labelers.flow`, `labelers.dis_flow`,
`labelers.sea_raft`); this package imports nothing heavy on its own.
"""
