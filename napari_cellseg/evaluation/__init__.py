"""COCO AP/AP50 with pycocotools and instance matching (TP/(TP+FP+FN), PQ)."""
