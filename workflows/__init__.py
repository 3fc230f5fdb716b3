"""The escrow lifecycles: machines, policies, permissions and the engine that applies events."""
