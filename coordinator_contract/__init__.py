"""The Coordinator contract: Solidity source, its compiled artifact, and a loader for the artifact."""
