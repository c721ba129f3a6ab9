"""What users take elsewhere: cell tables, outlines, overlays, bioimage.io packages."""
