"""Guest disk images: recipes, LUKS formatting without dm-crypt, initramfs."""
