"""The functions the image benchmark calls: numpy imported when the module loads."""

import ember

numpy_image = ember.Image.debian_slim().pip_install("numpy==2.3.5").add_local_python_source("core_app")
app = ember.App("bench-images")

with numpy_image.imports():
    import numpy


@app.function(image=numpy_image)
def numpy_sum(n):
    return int(numpy.arange(n).sum())
