"""What the package writes for people: sample exports (PNG, NIfTI, datasets, zip) and pictures of pairs."""
