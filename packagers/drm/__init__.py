"""Content protection in the packaging stage: the keys of a media set (``keys``), Common Encryption of fMP4
fragments (``cenc``: the 'cenc' AES-CTR and 'cbcs' AES-CBC 1:9 pattern schemes, with NAL-aware subsamples), their
boxes (``boxes``), and HLS SAMPLE-AES of MPEG-TS (``sample_aes``). Pure: keys come in, encrypted bytes go out; where
keys come from (a DRM info service, or derived from a partner secret) is the gateway's business."""
