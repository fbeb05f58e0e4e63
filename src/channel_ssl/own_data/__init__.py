"""Your own images: a folder of multichannel images + a CSV -> features and honest scores.

- :mod:`~channel_ssl.own_data.import_images` (``channel-ssl import-images``): the images and
  their table -> the project's shards + manifest, with labels, groups and splits;
- :mod:`~channel_ssl.own_data.evaluate_features` (``channel-ssl evaluate-features``): a
  checkpoint's features of that dataset, scored by k-NN and a linear probe beside two
  references (the same network at random initialisation, per-channel intensity statistics);
- import-images' pieces: :mod:`~channel_ssl.own_data.import_options` (flags, checks, the
  table), :mod:`~channel_ssl.own_data.splits`, :mod:`~channel_ssl.own_data.images` (one image
  file);
- evaluate-features' pieces: :mod:`~channel_ssl.own_data.dataset` (an imported dataset),
  :mod:`~channel_ssl.own_data.feature_models` (networks and features),
  :mod:`~channel_ssl.own_data.intensity` (the intensity statistics),
  :mod:`~channel_ssl.own_data.protocols` and :mod:`~channel_ssl.own_data.scoring` (scores),
  :mod:`~channel_ssl.own_data.report` (report.md, UMAP);
- :mod:`~channel_ssl.own_data.demo_images` writes a small synthetic folder to try it on.

Walk-through: docs/own-data.md.
"""
