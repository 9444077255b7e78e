//! Files: uploaded blobs, their metadata and signed download links.
