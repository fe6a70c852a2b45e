"""Workspaces: git worktrees, plain folders, and cleaning them up."""
