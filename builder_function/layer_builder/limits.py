"""Lambda, AWS and builder limits in one place. Every other module imports them from here."""

# --- Lambda (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html) ---
#: Function code plus all its layers, unzipped.
MAX_UNZIPPED_BYTES = 262_144_000
#: PublishLayerVersion with Content.ZipFile; anything larger must go through S3.
MAX_DIRECT_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_LAYERS_PER_FUNCTION = 5
MAX_LAYER_NAME_LENGTH = 140
LAYER_NAME_PATTERN = r"[a-zA-Z0-9_-]+"
MAX_DESCRIPTION_LENGTH = 256
MAX_LICENSE_INFO_LENGTH = 512
#: Memory that buys a function one vCPU's worth of processor time; CPU grows in proportion
#: (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).
MB_PER_VCPU = 1769
#: Where a layer unpacks in the function's file system (read-only).
LAYER_MOUNT = "/opt"
LAYER_PYTHON_DIR = "python"

# --- Safe unpacking of uploaded archives ---
MAX_ARCHIVE_MEMBERS = 20_000
#: Bytes really written while unpacking, not what headers claim.
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
#: A member (or the whole archive) expanding more than this many times is a bomb.
MAX_COMPRESSION_RATIO = 200
#: The ratio is only judged once a member has produced this much, so tiny text files pass.
RATIO_GRACE_BYTES = 1 * 1024 * 1024
MAX_PATH_DEPTH = 64
MAX_PATH_LENGTH = 1024
#: A zip's central directory (its listing) is read whole and parsed at ~430 bytes of memory per
#: entry (measured, CPython 3.13), so it is checked before parsing. 16 MiB holds 20,000 members
#: whose paths average 790 bytes; even as minimal 46-byte entries it parses in under 160 MB.
MAX_ZIP_DIRECTORY_BYTES = 16 * 1024 * 1024
#: The headers of one tar member (ustar, pax, GNU long names): tarfile reads them whole.
MAX_TAR_HEADER_BYTES = 1024 * 1024

# --- Files the builder parses whole (memory bombs past the upload caps) ---
#: Pipfile, Pipfile.lock, pyproject.toml and setup.cfg are parsed whole, at up to ~25 bytes of
#: memory per byte (a 30 MB lock of `[[],[],...]` took 700 MB), so their size is checked first.
#: The largest real Pipfile.lock files are well under 1 MB.
MAX_PROJECT_FILE_BYTES = 4 * 1024 * 1024
#: Members of one locked wheel, checked in its end records before zipfile parses the listing:
#: planning costs ~1.5 kB per member. A layer zip holds at most 65,535 files, so a wheel listing
#: more can never ship whole; the biggest common wheels list ~16,000 (tensorflow-cpu 15,632,
#: cmeel-boost 16,235, torch 13,043). Its central directory is capped by MAX_ZIP_DIRECTORY_BYTES
#: as an upload's is (those wheels use ~1.8 MB).
MAX_WHEEL_MEMBERS = 65_535
#: Members listed by all the wheels of one build together, checked before any is planned: four
#: are planned at once (four wheels of 99,990 members took the builder to 657 MB, two of 74,990 to
#: 287 MB, one of 99,990 to 189 MB). Room above 65,535 for what slimming drops.
MAX_LAYER_WHEEL_MEMBERS = 100_000
#: One source larger than this is not compiled (it ships without bytecode, with a warning). The
#: largest real modules seen compile well under MAX_COMPILE_MEMORY_BYTES (pyscf's 3.9 MB
#: sap_data.py: 189 MB; pydicom's 1.9 MB _concepts_dict.py: 157 MB), but a 12 MB `x=1` file
#: took 4.85 GB, and its compile time grows with it before the memory cap stops it.
MAX_COMPILE_SOURCE_BYTES = 4 * 1024 * 1024
#: Address space (RLIMIT_AS) of a bytecode compiler process: a source that needs more fails with
#: MemoryError and ships without bytecode. Measured (CPython 3.13): the modules above need at most
#: 189 MB; `x=1` sources need ~400 bytes per byte of source.
MAX_COMPILE_MEMORY_BYTES = 256 * 1024 * 1024

#: A shared object larger than this is not stripped: it is inflated whole in memory, on one thread
#: per CPU (the largest the bench locks strip, pyarrow's libarrow.so, is 48.7 MB).
MAX_STRIP_MEMBER_BYTES = 64 * 1024 * 1024

#: Room every layer leaves of MAX_UNZIPPED_BYTES for the consumer's own code and other layers,
#: unless the project sets `[tool.layer-builder] headroom`; bytecode never eats it.
DEFAULT_HEADROOM = 10 * 1024 * 1024
#: Bytes reserved for the layer's manifest (.layer-builder.json), written after bytecode is chosen.
MANIFEST_ALLOWANCE = 64 * 1024

# --- Reproducible zip ---
#: The earliest timestamp a zip can store; used for every entry.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o644
ZIP_EXEC_MODE = 0o755
#: Measured on the heavy data-science fixture (2 cores): level 6 took 17.5 s for 84.3 MB, level 3
#: 7.6 s for 90.5 MB, level 1 5.3 s for 95.1 MB. Level 3 buys most of the speed for 7 % more bytes.
ZIP_COMPRESS_LEVEL = 3

# --- Size report ---
TOP_PACKAGES_SHOWN = 10
#: A failed tool's log kept in a report: its end, where compilers put what stopped them. The
#: builder's JSON report stays small enough to read in a browser.
MAX_REPORT_LOG_CHARS = 64 * 1024
