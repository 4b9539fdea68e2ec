"""What the tasks run: one boot, the nightly, the patch author's checks, reports."""
