"""Your own images: a folder of multichannel images + a CSV -> features and honest scores.

- :mod:`~channel_ssl.own_data.import_images` (``channel-ssl import-images``): the images and
  their table -> the project's shards + manifest, with labels, groups and splits;
- :mod:`~channel_ssl.own_data.evaluate_features` (``channel-ssl evaluate-features``): a
  checkpoint's features of that dataset, scored by k-NN and a linear probe beside two
  references (the same network at random initialisation, per-channel intensity statistics);
- :mod:`~channel_ssl.own_data.images` reads one image file, :mod:`~channel_ssl.own_data.intensity`
  computes the intensity statistics, :mod:`~channel_ssl.own_data.protocols` scores features,
  :mod:`~channel_ssl.own_data.demo_images` writes a small synthetic folder to try it on.

Walk-through: docs/own-data.md.
"""
