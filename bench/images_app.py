"""The functions the image benchmark calls: numpy imported when the module loads."""

import ember

numpy_image = ember.Image.debian_slim().pip_install("numpy==2.3.5").add_local_python_source("core_app")
app = ember.App("bench-images")

with numpy_image.imports():
    import numpy


@app.function(image=numpy_image)
def numpy_sum(n):
    return int(numpy.arange(n).sum())


# For 100 cold starts at once (bench/forks.py --at-once): each input holds its container, so a
# map of N needs N containers; a small request (a limit of 1 GiB), so that one worker fits them all.
@app.function(image=numpy_image, cpu=0.01, memory=(16, 1024))
def numpy_hold(seconds):
    import os
    import time
    time.sleep(seconds)
    return os.environ["EMBER_CONTAINER_ID"]
