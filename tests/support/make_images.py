"""Writes images in the formats and colour modes the data loader must accept, for tests.

usage: make_images.py OUT_DIR SOURCE_JPEG
Makes gray.jpg (grayscale), cmyk.jpg (CMYK JPEG), rgba.png, palette.png, anim.gif (2 frames),
image.bmp from SOURCE_JPEG, and huge.jpg (12000 x 12000).
"""
import sys
from pathlib import Path

from PIL import Image

out, source = Path(sys.argv[1]), Image.open(sys.argv[2]).convert("RGB")
out.mkdir(parents=True, exist_ok=True)
source.convert("L").save(out / "gray.jpg")
source.convert("CMYK").save(out / "cmyk.jpg")
source.convert("RGBA").save(out / "rgba.png")
source.convert("P").save(out / "palette.png")
frames = [source, source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
frames[0].save(out / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
source.save(out / "image.bmp")
Image.new("RGB", (12000, 12000), (90, 120, 200)).save(out / "huge.jpg", quality=50)
