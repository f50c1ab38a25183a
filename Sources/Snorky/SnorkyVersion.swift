/// The version of this build, reported by `snorky --version` and `snorky_build_info`.
public enum SnorkyVersion {
    public static let current = "0.1.0"
}
