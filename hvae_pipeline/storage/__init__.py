"""Writing files and folders safely: atomic files, staged output folders that never touch what a run did not create."""
