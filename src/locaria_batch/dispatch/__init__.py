"""Dispatch: claim queued jobs, launch them through a runner, lease, reconcile, retry, cancel, time out."""
