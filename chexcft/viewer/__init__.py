"""Library side of the Streamlit viewer (app/viewer.py): everything the app shows can be computed from Python.

    options.parse_viewer_args(argv)      # the viewer's options (shared by `chexcft view` and `streamlit run`)
    session.load_runs / load_table / predict_table_members / predict_pixels_members
    browser.study_index / select_studies # patients -> studies -> views, filtered and sorted
    images.*                             # window/level defaults, zoom, heatmap overlay
    performance.*                        # AUC + CIs, ROC with radiologists, reliability diagrams, CFT reports
    exports.*                            # competition submission CSV and per-image predictions CSV as bytes
    upload.read_upload                   # one uploaded DICOM/PNG/JPEG, size-limited and content-sniffed
"""
