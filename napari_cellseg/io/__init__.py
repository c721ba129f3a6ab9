"""Files in and out: images, planes and channels, the HW3 layout, COCO and RLE, raw instances."""
