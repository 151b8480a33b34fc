"""Teacher prompts, read at run time.

To change them, copy the folder, edit it and point CODEPRM_LABELER_PROMPTS_DIR at the copy.
"""
