"""Forms of the usage pages."""

from django import forms

from usage.usage_file import MAX_FILE_BYTES

# Uploads between the usage-file limit and this are read and recorded as "file too large";
# anything bigger is refused by the form without being read into memory (it is no usage file,
# and recording it would mean holding it).
UPLOAD_READ_LIMIT = 8 * MAX_FILE_BYTES


class UsageFileUploadForm(forms.Form):
    file = forms.FileField(
        label="License usage file",
        help_text=(
            "license_usage.csv exactly as the customer sent it. Do not open it in a "
            "spreadsheet first: that rewrites the timestamps and the file is rejected."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
        # An empty file is the service's to refuse: then it is recorded like any other.
        allow_empty_file=True,
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > UPLOAD_READ_LIMIT:
            raise forms.ValidationError(
                f"This file is {upload.size / (1024 * 1024):.0f} MB; a license usage file is "
                "a few kilobytes per year of data. Check that the right file was chosen."
            )
        return upload

    def content(self) -> bytes:
        upload = self.cleaned_data["file"]
        upload.seek(0)
        return upload.read()
