#!/usr/bin/env bash
# Builds switchboard_<version>_<arch>.deb from the tree with dpkg-deb: the
# binary, the systemd units and the example configuration of dist/, and
# the maintainer scripts of dist/debian/. Usage:
#
#	scripts/mkdeb.sh [OUTDIR]        (make deb; OUTDIR defaults to bin/)
#
# VERSION (scripts/version.sh) is stamped into the binary as well, so
# `switchboard version` prints the package's version. GO names the Go
# tool (default: go).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bin}
go=${GO:-go}
version=$(scripts/version.sh)
arch=$(dpkg --print-architecture)
goarch=$("$go" env GOARCH)
pkg=switchboard_${version}_${arch}

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
umask 022

# The binary: stripped of symbol tables (-s -w) and with the build
# paths trimmed, so the package does not depend on where it was built.
install -d "$root/usr/bin"
CGO_ENABLED=0 GOARCH=$goarch "$go" build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$version" \
	-o "$root/usr/bin/switchboard" ./cmd/switchboard

install -d "$root/lib/systemd/system" "$root/etc/switchboard"
install -m 0644 dist/switchboard.service dist/switchboard.socket "$root/lib/systemd/system/"
install -m 0644 dist/switchboard.toml "$root/etc/switchboard/switchboard.toml"

doc=$root/usr/share/doc/switchboard
install -d "$doc" "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides"
install -m 0644 dist/switchboard.1 "$root/usr/share/man/man1/"
gzip -9n "$root/usr/share/man/man1/switchboard.1"
install -m 0644 dist/debian/lintian-overrides "$root/usr/share/lintian/overrides/switchboard"
for f in docs/*.md; do
	install -m 0644 "$f" "$doc/"
	gzip -9n "$doc/$(basename "$f")"
done
mv "$doc/README.md.gz" "$doc/guide.md.gz"
install -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"

# changelog: one entry for this build, dated by the commit so that the
# same tree gives the same package.
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
{
	echo "switchboard ($version) unstable; urgency=medium"
	echo
	echo "  * Built from $(git rev-parse --short HEAD 2>/dev/null || echo 'a source tree')."
	echo
	echo " -- Switchboard maintainers <switchboard@example.org>  $date"
} | gzip -9n >"$doc/changelog.gz"

# common_license prints a license file, or for the licenses Debian keeps
# in /usr/share/common-licenses (Policy 12.5) its copyright lines and a
# pointer to that copy.
common_license() {
	local name=
	if grep -q 'Apache License' "$1" && grep -q 'Version 2.0' "$1"; then
		name=Apache-2.0
	elif grep -q 'Mozilla Public License,\? [Vv]ersion 2.0' "$1"; then
		name=MPL-2.0
	fi
	if [ -z "$name" ]; then
		cat "$1"
		return
	fi
	grep -i '^ *copyright' "$1" || true
	echo "Licensed under the $name license; on Debian systems its full text is in"
	echo "/usr/share/common-licenses/$name."
}

# copyright: the project's, then every Go module linked into the binary
# with its license text.
{
	cat dist/debian/copyright
	"$go" list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/switchboard |
		sort -u | while read -r path ver dir; do
		lic=
		for f in "$dir"/LICENSE* "$dir"/COPYING*; do
			[ -f "$f" ] && lic=$f && break
		done
		[ -n "$lic" ] || { echo "mkdeb: no license file in $dir" >&2; exit 1; }
		echo
		echo "----------------------------------------------------------------------"
		echo "$path $ver"
		echo
		common_license "$lic"
	done
	echo
	echo "----------------------------------------------------------------------"
	echo "The Go standard library $("$go" env GOVERSION)"
	echo
	cat "$("$go" env GOROOT)/LICENSE"
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	dist/debian/control >"$root/DEBIAN/control"
install -m 0644 dist/debian/conffiles "$root/DEBIAN/conffiles"
install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
	LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
	dpkg-deb --root-owner-group -Zxz --build "$root" "$out/$pkg.deb" >/dev/null
echo "$out/$pkg.deb"
