"""Real footage shipped for `vsseg-edge demo`: a short downscaled H.264 copy of a PandaSet street clip.

PandaSet by Hesai and Scale, CC BY 4.0 (see ATTRIBUTION.txt beside this file). The clip is held out from the
footage the zoo's `-tc` models were fine-tuned on, so the demo's before/after TC is measured on unseen video.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
PANDASET_CLIP = HERE / "pandaset_sf_front_640x360.mp4"
ATTRIBUTION = HERE / "ATTRIBUTION.txt"
