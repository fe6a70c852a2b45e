"""The local executor: daughters as processes on this machine, started and reaped by keepers, contained in cgroups where the kernel allows."""
