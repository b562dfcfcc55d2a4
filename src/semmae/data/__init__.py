"""Data (paper Sec. 4 setup): image folders, joint image/part-map transforms, the part-map cache, the synthetic part dataset."""
